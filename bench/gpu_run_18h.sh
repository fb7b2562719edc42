# Issue 18 (run after `source bench/gpu_env.sh`): this tree's GPU tests of what changed (W8A8 at 33-256 rows, SiLU·mul
# fused into the INT4 GEMV, the tensor-core GEMV at 40/100 rows), then per format in QUANTS one engine: Llama-3.1-8B
# TPOT at batch 1 and 64 (output 32) and the whole W1, with the seeded picks (bench/seed). Ends in $OUT/r18h.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/*.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; cp $KVANT_HOME/*.json $W/ 2>/dev/null; tar czf $OUT/r18h.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
TAIL=2 step tests ${T_TESTS:-60} python -P -m pytest -q -x -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "${TESTS_K:-w8a8_gemm_mid_rows or silu_mul_fused}"
for q in ${QUANTS:-bf16 int8 fp8 int4}; do
  TAIL=6 step $q ${T_ENGINE:-110} python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant $q --output-len 32 --out $W
done
