# Issue 18, the next call (run after `source bench/gpu_env.sh`): GPU tests of the INT4 GEMV's candidates at 40/100/200
# rows (every tuner candidate, 16-bit-scaled ones against the bf16-rounded reference) and of the 8-bit GEMMs; the GEMV
# at 16-64 rows with the pipelined 32/64-token configs (bench/w4a16_gemv_sweep.py); then bf16, INT4 and FP8 engines
# (TPOT b1/b64 and W1; FP8 now through kvant's GEMM to 128 rows, INT4's static dispatch to 256 rows). INT8 when
# QUANTS says so. Ends in $OUT/r18t.tgz.
C=bench/configs
TGZ=r18t.tgz; source bench/gpu_lib.sh
TAIL=3 step tests ${T_TESTS:-120} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "mma_gemv_llama_shapes or w8a8_gemm_mid_rows or silu_mul_fused"
TAIL=20 step gemv ${T_GEMV:-90} python -P bench/w4a16_gemv_sweep.py --out $W/gemv-mid.json --rows 16,32,64 --shapes "llama gate_up,llama down,llama qkv,llama o" --warm-timeout 60
for q in ${QUANTS:-bf16 int4 fp8}; do
  TAIL=6 step $q ${T_ENGINE:-110} python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant $q --output-len 32 --out $W
done
