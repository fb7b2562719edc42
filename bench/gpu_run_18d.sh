# Issues 17 and 18 (run after `source bench/gpu_env.sh`): programmatic dependent launch (KVANT_PDL=1) and the W8A16
# GEMM that reduces its K splits in one launch. GPU tests first (the PDL chain against plain launches, the 8-bit
# decode paths), then Llama-3.1-8B TPOT at batch 1 and 64 per format (QUANTS) with PDL off and on, the order
# alternating so that drift does not favour one side, then greedy logits of Qwen3-0.6B with PDL on (against
# transformers / the dequantized reference), then (PROF) a profile of one decode step. Ends in $OUT/r18d.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/*.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r18d.tgz -C $W --exclude kvh .; cp $KVANT_HOME/*.json $W/ 2>/dev/null; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
[ -z "$SKIP_TESTS" ] && TAIL=4 step tests ${T_TESTS:-150} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "${TESTS_K:-pdl or w8a16 or w8a8 or fused_activation or mma_gemv_in}"
n=0
for q in ${QUANTS:-fp8 int4 bf16}; do
  order="0 1"; [ $((n % 2)) = 1 ] && order="1 0"; n=$((n + 1))
  for p in $order; do
    KVANT_PDL=$p TAIL=3 step lat-$q-pdl$p ${T_LAT:-75} python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant $q --batch-sizes 1,64 --output-len 64 --json $W/latency-$q-pdl$p.json
  done
done
[ -z "$SKIP_LOGITS" ] && KVANT_PDL=1 TAIL=12 step logits-pdl 100 python -P bench/check_logits.py --config $C/qwen3-0.6b.json --quant ${LOGITS_Q:-bf16,int4,fp8,int8} --prompts 8 --new 16
for q in $PROF; do
  KVANT_PDL=${PROF_PDL:-1} TAIL=40 step prof-$q 80 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --quant $q --batch-sizes ${PROF_BS:-1} --top 14 --json $W/profile-$q.json
done
