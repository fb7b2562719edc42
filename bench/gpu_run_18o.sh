# Issue 18 (run after `source bench/gpu_env.sh`), one call for what the INT4 changes of 2026-12-07 (fourth session)
# need measured: the GPU tests that compile few variants; the INT4 kernels at 128 and 256 rows on Llama-3.1-8B's
# shapes (bench/w4a16_wide_sweep.py, the wide tile at its default), whose picks become the tuned table the engines
# read; bf16 and INT4 engines (bench/engine_quant_pass.py: TPOT b1/b64 and the whole W1); then the GEMV sweep at 1-4
# rows (scales prefetched, configs by bytes in flight). Ends in $OUT/r18o.tgz.
C=bench/configs
TGZ=r18o.tgz; source bench/gpu_lib.sh
TAIL=3 step tests ${T_TESTS:-60} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "silu_mul_fused or mma_gemv_in_a_cuda_graph or w4a16_dispatch"
TAIL=30 step wide ${T_WIDE:-170} python -P bench/w4a16_wide_sweep.py --out $W/wide.json --rows 128,256 --wide default --shapes "llama gate_up,llama down,llama qkv,llama o" --table $KVANT_HOME/w4a16_tune.json --warm-timeout 50
cp $KVANT_HOME/w4a16_tune.json $W/ 2>/dev/null
for q in bf16 int4; do
  TAIL=6 step $q ${T_ENGINE:-110} python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant $q --output-len 32 --out $W
done
TAIL=40 step gemv ${T_GEMV:-110} python -P bench/w4a16_gemv_sweep.py --out $W/gemv.json --shapes "llama gate_up,llama down,llama qkv,llama o" --warm-timeout 60
