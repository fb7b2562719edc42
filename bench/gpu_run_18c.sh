# Issue 18 (run after `source bench/gpu_env.sh`): the wide W4A16 tile's config sweep on Llama-3.1-8B's shapes at
# 64-256 rows (ROWS) against swap-AB, dequantize + cuBLAS and bf16 cuBLAS; the picks land in w4a16_tune.json (the on-disk
# table kvant.kernels.w4a16_tune reads) and in bench/seed/ for the engine runs that follow in the same call
# (ENGINE="bf16 int4": bench/gpu_run_18b.sh with the whole W1). Ends in $OUT/r18c.tgz (and $OUT/r18b.tgz).
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device-sweep.txt
timeout ${T_SWEEP:-240} python -P bench/w4a16_wide_sweep.py --out $W/wide.json --table $W/w4a16_tune.json \
  --shapes "${SHAPES:-llama qkv,llama o,llama gate_up,llama down}" --rows ${ROWS:-64,128,256} --warm-timeout ${T_WARM:-120} 2>&1 | tee $W/log-wide.txt | grep -v "^warm-up .* m="
tar czf $OUT/r18c.tgz -C $W --exclude kvh .
if [ -n "$ENGINE" ] && [ -f $W/w4a16_tune.json ]; then
  mkdir -p bench/seed && cp $W/w4a16_tune.json bench/seed/
  QUANTS="$ENGINE" W1_LIMIT=all T_ENGINE=${T_ENGINE:-110} bash bench/gpu_run_18b.sh
fi
