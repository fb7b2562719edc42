# Issue 18 (run after `source bench/gpu_env.sh`): the tensor-core INT4 GEMV at 1, 2 and 4 rows with one and two blocks
# prefetched per thread, on Llama-3.1-8B's g128 shapes (bench/w4a16_gemv_sweep.py), after its GPU tests at those rows.
# Ends in $OUT/r18j.tgz.
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
timeout ${T_TESTS:-60} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "mma_gemv_llama_shapes or mma_gemv_in_a_cuda_graph" 2>&1 | tail -2 | tee $W/log-tests.txt
timeout ${T_SWEEP:-240} python -P bench/w4a16_gemv_sweep.py --out $W/gemv.json --shapes "llama qkv,llama o,llama gate_up,llama down" \
  --warm-timeout ${T_WARM:-90} 2>&1 | grep -v "^warm-up" | tee $W/log-gemv.txt | tail -40
tar czf $OUT/r18j.tgz -C $W --exclude kvh .
