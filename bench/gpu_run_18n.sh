# Issue 18 (run after `source bench/gpu_env.sh`), the call after gpu_run_18m.sh on the same machine: GPU tests of the
# 8-bit GEMMs (FP8 operands loaded as FP8); the FP8 tile against _scaled_mm at 64-256 rows (bench/w8a8_mid_sweep.py);
# then per format in QUANTS one engine (bench/engine_quant_pass.py): Llama-3.1-8B TPOT at batch 1 and 64 and the whole
# W1, with the seeded 16-bit picks and, when bench/seed has one, the INT4 table that 18m's sweep wrote. Ends in
# $OUT/r18n.tgz.
C=bench/configs
TGZ=r18n.tgz; source bench/gpu_lib.sh
cp bench/seed/w4a16_tune.json $KVANT_HOME/ 2>/dev/null && echo "INT4 table seeded"
TAIL=2 step tests ${T_TESTS:-70} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "${TESTS_K:-w8a8 or w8a16}"
[ -n "$W8MID" ] && TAIL=20 step w8mid ${T_W8MID:-90} python -P bench/w8a8_mid_sweep.py --formats fp8 --rows 64,128,256 --seconds 80 --json $W/w8a8_mid.json
for q in ${QUANTS:-bf16 int4 fp8}; do
  TAIL=6 step $q ${T_ENGINE:-110} python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant $q --output-len 32 --out $W
done
