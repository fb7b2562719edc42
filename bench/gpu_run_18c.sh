# Issue 18 (run after `source bench/gpu_env.sh`): the wide W4A16 tile's config sweep on Llama-3.1-8B's shapes at
# 32-256 rows against swap-AB, dequantize + cuBLAS and bf16 cuBLAS; the picks land in $OUT/w4a16_tune.json (the
# on-disk table kvant.kernels.w4a16_tune reads).
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $OUT/device.txt
timeout ${T_SWEEP:-500} python -P bench/w4a16_wide_sweep.py --out $OUT/wide.json --table $OUT/w4a16_tune.json \
  --shapes "${SHAPES:-llama qkv,llama o,llama gate_up,llama down}" --rows ${ROWS:-32,64,128,256} 2>&1 | tee $OUT/log-wide.txt | grep -v "^warm-up .* m="
