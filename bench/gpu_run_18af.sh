# Issue 18: both Gluon wgmma tiles swept on Llama-3.1-8B's four g128 shapes at 64, 128 and 256 rows against the
# dispatch and bf16 cuBLAS, their winners (>3 % over the dispatch) written as a tuned table; then the engine A/B in one
# call: bf16, INT4 with the wgmma tiles off (KVANT_WGMMA=0, no table), INT4 with them on (KVANT_WGMMA=1 and the
# sweep's table), TPOT at batch 1/64 (BATCHES="" skips it) and W1; then the wgmma GPU tests of both tiles (TESTS_K
# picks others, "" runs the whole file). Ends in $OUT/r18af.tgz.
# Split over calls that each fit the device's 600 s: SWEEP=0 takes the table from TABLE (default
# bench/seed/wgmma_table.json, carried from an earlier call's $OUT) instead of sweeping; QUANTS="" runs no engine;
# TESTS=0 runs no test.
C=bench/configs
TGZ=r18af.tgz; source bench/gpu_lib.sh
if [ "${SWEEP:-1}" = 1 ]; then
  TAIL=24 step sweep ${T_SWEEP:-240} python -P bench/w4a16_wgmma_sweep.py --tile wgmma,wgmma_ws --shapes "${SHAPES:-llama gate_up,llama down,llama qkv,llama o}" --rows ${ROWS:-64,128,256} --out $W/wgmma_both.json --table $W/wgmma_table.json
else
  cp "${TABLE:-bench/seed/wgmma_table.json}" $W/wgmma_table.json || { echo "SWEEP=0 needs TABLE (or bench/seed/wgmma_table.json)"; exit 2; }
fi
for q in ${QUANTS-bf16 int4-nowgmma int4}; do
  mkdir -p $W/$q; rm -f $KVANT_HOME/w4a16_tune.json
  [ $q = int4 ] && cp $W/wgmma_table.json $KVANT_HOME/w4a16_tune.json
  TAIL=6 step $q ${T_ENGINE:-130} env KVANT_WGMMA=$([ $q = int4-nowgmma ] && echo 0 || echo 1) python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant ${q%-nowgmma} --batch-sizes "${BATCHES-1,64}" --output-len 32 --out $W/$q
done
[ "${TESTS:-1}" = 1 ] && TAIL=8 step tests ${T_TESTS:-120} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "${TESTS_K-wgmma}"
true
