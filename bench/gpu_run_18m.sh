# Issue 18 (run after `source bench/gpu_env.sh`): GPU tests of the INT4 kernels (the tensor-core GEMV to 256 rows with
# the block scaled in 16 bits, the dispatch, SiLU·mul fused at <= 4 rows); the INT4 kernels at 128 and 256 rows on
# Llama-3.1-8B's shapes (bench/w4a16_wide_sweep.py, the wide tile at its default only; its picks become the tuned
# table the engine reads from here on); TPOT b1/b64 for bf16 and INT4 (b1/b64 read no table rows); the INT4 streaming
# probe (bench/w4_stream_probe.py); with GEMV=1 the GEMV sweep at 1-4 rows (pairs of blocks among its configs).
# Ends in $OUT/r18m.tgz.
C=bench/configs
TGZ=r18m.tgz; source bench/gpu_lib.sh
TAIL=3 step tests ${T_TESTS:-100} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "silu_mul_fused or repacked_families or mma_gemv_in_a_cuda_graph or w4a16_dispatch"
TAIL=30 step wide ${T_WIDE:-200} python -P bench/w4a16_wide_sweep.py --out $W/wide.json --rows 128,256 --wide default --shapes "llama gate_up,llama down,llama qkv,llama o" --table $KVANT_HOME/w4a16_tune.json --warm-timeout 60
cp $KVANT_HOME/w4a16_tune.json $W/ 2>/dev/null && cp $KVANT_HOME/w4a16_tune.json bench/seed/  # for 18n on this machine
for q in bf16 int4; do
  TAIL=3 step lat-$q ${T_LAT:-75} python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant $q --batch-sizes 1,64 --output-len 64 --json $W/latency-$q.json
done
[ -n "$GEMV" ] && TAIL=20 step gemv ${T_GEMV:-120} python -P bench/w4a16_gemv_sweep.py --out $W/gemv.json --shapes "llama gate_up,llama down,llama qkv,llama o" --warm-timeout 70
TAIL=60 step probe ${T_PROBE:-120} python -P bench/w4_stream_probe.py --json $W/stream.json
