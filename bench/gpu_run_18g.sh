# Issue 18 (run after `source bench/gpu_env.sh`): the tensor-core INT4 GEMV at 16-128 rows against the wide tile,
# swap-AB and bf16 cuBLAS on Llama-3.1-8B's shapes (bench/w4a16_wide_sweep.py via gpu_run_18c.sh), after its GPU
# tests at 1-128 rows in CUDA graphs; then, with QUANTS, engine TPOT and the whole W1 per format (gpu_run_18b.sh).
W=$OUT/work; mkdir -p $W
python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "mma_gemv" 2>&1 | tail -2 | tee $W/log-tests-mma.txt
ROWS=${ROWS:-16,32,64,128} T_SWEEP=${T_SWEEP:-240} T_WARM=${T_WARM:-100} bash bench/gpu_run_18c.sh
[ -n "$QUANTS" ] && W1_LIMIT=all T_ENGINE=${T_ENGINE:-110} bash bench/gpu_run_18b.sh
true
