# Device calls for issues 17 and 18 (run after `source bench/gpu_env.sh`), in parts chosen by env vars:
#   TESTS=1  GPU tests: the tensor-core W4A16 GEMV, the 8-bit weight-only decode GEMM, the fused decode attention
#   SWEEP=1  the decode attention sweep on this tree and on bench/old (the tree with three launches per layer)
#   QUANTS="bf16 int4 fp8 int8"  Qwen3-0.6B logits of the quantized formats against the dequantized reference, then
#            per format Llama-3.1-8B TPOT at batch 1 and 64 and W1's first W1_LIMIT requests (W1_LIMIT=all: the
#            whole W1), one process each
#   BASE_QUANTS="..."  the same engine runs on bench/base (the tree before this session's kernels)
#   PROF="fp8 ..."  `kvant bench profile` of those formats at batch 1, 64 and 256 (PROF_BS)
# Ends in $OUT/r18b.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W/now $W/base
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/*.json $KVANT_HOME/ 2>/dev/null  # start-up race results and W4A16 tuner picks kept from earlier calls
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r18b.tgz -C $W --exclude kvh .; cp $KVANT_HOME/*.json $W/ 2>/dev/null; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
[ -n "$TESTS" ] && step tests ${T_TESTS:-200} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py tests/engine/test_engine_gpu.py -k "${TESTS_K:-mma_gemv or rope_store_decode or repacked or skinny_gemm_8bit or fused_activation_quant or engine_gpu}"
if [ -n "$SWEEP" ]; then
  TAIL=2 step sweep-main 100 python -P bench/decode_attn_sweep.py --json $W/attn-main.json
  (source bench/old/bench/gpu_env.sh; cd bench/old; TAIL=2 step sweep-old 60 python -P ../decode_attn_sweep.py --label old --json $W/attn-old.json)
fi
LOGITS_Q=$(for q in $QUANTS; do [ $q != bf16 ] && echo -n "$q,"; done); LOGITS_Q=${LOGITS_Q%,}
[ -n "$LOGITS_Q" ] && step logits 60 python -P bench/check_logits.py --config $C/qwen3-0.6b.json --quant $LOGITS_Q --prompts 8 --new 16
LIMIT="--limit ${W1_LIMIT:-64}"; [ "$W1_LIMIT" = all ] && LIMIT=
for q in $QUANTS; do
  TAIL=6 step $q-now ${T_ENGINE:-80} python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant $q --output-len 32 $LIMIT --out $W/now
done
for q in $BASE_QUANTS; do
  (source bench/base/bench/gpu_env.sh; cd bench/base; TAIL=6 step $q-base ${T_ENGINE:-80} python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant $q --output-len 32 $LIMIT --out $W/base)
done
for q in $PROF; do
  TAIL=50 step $q-prof 80 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --quant $q --batch-sizes ${PROF_BS:-1,64,256} --max-num-seqs 256 --top 12 --json $W/profile-$q.json
done
