# Issue 18: bf16 and INT4 engines (TPOT b1/b64, W1; Llama-3.1-8B random weights) with the wgmma picks of
# bench/gpu_run_18u.sh as the tuner's table (bench/seed/wgmma_tune.json, carried). QUANTS adds formats (fp8, int8:
# their untimed defaults). Ends in $OUT/r18v.tgz.
C=bench/configs
TGZ=r18v.tgz; source bench/gpu_lib.sh
cp bench/seed/wgmma_tune.json $KVANT_HOME/w4a16_tune.json && cat $KVANT_HOME/w4a16_tune.json
for q in ${QUANTS:-int4 bf16}; do
  TAIL=6 step $q ${T_ENGINE:-110} python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant $q --output-len 32 --out $W
done
