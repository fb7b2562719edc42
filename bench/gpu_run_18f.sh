# Issue 18 (run after `source bench/gpu_env.sh`): GPU tests of the W8A8 GEMM at 33-256 rows (split-K configs) and the
# wide W4A16 tile at 100 rows; this tree's defaults per format (Llama-3.1-8B TPOT b1/b64, no tuned W4A16 table, 16-bit
# picks seeded); the INT4 step's per-kernel profile at batch 1 and 64 (PDL off); then the W8A8 mid-size sweep (bench/w8a8_mid_sweep.py). Ends in $OUT/r18f.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; cp $KVANT_HOME/*.json $W/ 2>/dev/null; tar czf $OUT/r18f.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
TAIL=2 step tests ${T_TESTS:-70} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "w8a8_gemm_mid_rows or (repacked_families_in_a_cuda_graph and 100) or silu_mul_fused"
for q in ${QUANTS:-bf16 fp8 int4}; do
  TAIL=3 step lat-$q ${T_LAT:-70} python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant $q --batch-sizes 1,64 --output-len 64 --json $W/latency-$q.json
done
KVANT_PDL=0 TAIL=30 step prof-int4 ${T_PROF:-60} python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --quant int4 --batch-sizes 1,64 --steps 5 --top 12 --json $W/profile-int4.json
TAIL=4 step w8mid ${T_SWEEP:-170} python -P bench/w8a8_mid_sweep.py --rows ${ROWS:-64,128,256} --seconds $(( ${T_SWEEP:-170} - 15 )) --json $W/w8a8_mid.json
