# Issue 18 (run after `source bench/gpu_env.sh`): GPU tests of the W8A8 GEMM's new default tiles at 33-256 rows and
# of the tensor-core INT4 GEMV; TPOT b1/b64 per format (QUANTS, default bf16 fp8 int8) with this tree's defaults;
# then the INT4 wide sweep with the tensor-core GEMV at ROWS (bench/w4a16_wide_sweep.py). Ends in $OUT/r18i.tgz.
C=bench/configs
TGZ=r18i.tgz; source bench/gpu_lib.sh
TAIL=2 step tests ${T_TESTS:-80} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "w8a8_gemm_mid_rows or mma_gemv"
for q in ${QUANTS:-bf16 fp8 int8}; do
  TAIL=3 step lat-$q ${T_LAT:-60} python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant $q --batch-sizes 1,64 --output-len 64 --json $W/latency-$q.json
done
TAIL=40 step wide ${T_SWEEP:-230} python -P bench/w4a16_wide_sweep.py --out $W/wide.json --table $W/w4a16_tune.json \
  --shapes "llama qkv,llama o,llama gate_up,llama down" --rows ${ROWS:-16,32,64,128} --warm-timeout ${T_WARM:-100}
