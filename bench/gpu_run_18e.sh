# Issue 18 (run after `source bench/gpu_env.sh`): the defaults of this tree without a tuned table (PDL on, the static
# W4A16 dispatch with the wide tile, the 8-bit race timed in CUDA graphs over L2-cold weight copies):
# Llama-3.1-8B TPOT at batch 1 and 64 per format, then the wide tile's dispatch in CUDA graphs (GPU test at 100 rows).
# Ends in $OUT/r18e.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null  # 16-bit picks only
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; cp $KVANT_HOME/*.json $W/ 2>/dev/null; tar czf $OUT/r18e.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
for q in ${QUANTS:-bf16 fp8 int4}; do
  TAIL=3 step lat-$q ${T_LAT:-70} python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant $q --batch-sizes 1,64 --output-len 64 --json $W/latency-$q.json
done
TAIL=2 step tests ${T_TESTS:-45} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "repacked_families_in_a_cuda_graph and 100"
