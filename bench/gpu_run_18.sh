# Issue #18's device call: the repacked W4A16 kernels' correctness on the GPU first (compiled, in CUDA graphs, the
# one-row GEMV included), then the kernel table on Llama-3.1-8B shapes (TUNE=1 also tunes the repacked kernels; the
# table is saved after every tune, so a step cut at its limit keeps its picks), then per format in QUANTS one engine
# timed for TPOT at batch 1 and 64 and for W1 (W1_LIMIT: its first N requests), and with ARCHS=1 the sm_86/sm_89
# kernel selections for FP8/INT8/INT4 against the dequantized reference (issue #21). Each step has its own timeout
# (T_TESTS, T_TABLE, T_ENGINE, T_ARCH seconds); a failure does not stop the others. Everything ends in $OUT/r18.tgz.
C=bench/configs
R="$OUT/work"; mkdir -p "$R"
export KVANT_HOME="${KVANT_HOME:-$R/kvant_home}"; mkdir -p "$KVANT_HOME"
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$R/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-4} "$R/log-$name.txt"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$R/device.txt"
[ -n "$TESTS_K" ] && step gpu-tests "${T_TESTS:-60}" python -P -m pytest -q -x -p no:cacheprovider tests/kernels/test_gpu.py -k "$TESTS_K"
[ -n "$LOGITS" ] && step logits-qwen3 45 python -P bench/check_logits.py --config $C/qwen3-0.6b.json --quant int4 --prompts 8 --new 16
[ -n "$ROWS" ] && TAIL=${TABLE_TAIL:-40} step table "${T_TABLE:-150}" python -P bench/w4a16_table.py --out "$R" --rows "$ROWS" ${SHAPES:+--shapes $SHAPES} ${TUNE:+--tune}
[ -f "$KVANT_HOME/w4a16_tune.json" ] && cp "$KVANT_HOME/w4a16_tune.json" "$R/w4a16_tune.json"
for q in $QUANTS; do
  TAIL=8 step engine-$q "${T_ENGINE:-60}" python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant $q --out "$R" --output-len ${OUTPUT_LEN:-32} ${W1_LIMIT:+--limit $W1_LIMIT}
done
if [ -n "$ARCHS" ]; then
  for arch in sm_89 sm_86; do
    step logits-$arch "${T_ARCH:-60}" python -P bench/check_logits.py --config $C/qwen3-0.6b.json --quant fp8,int8,int4 --kernel-arch $arch --prompts 8 --new 16
  done
fi
tar czf "$OUT/r18.tgz" -C "$R" --exclude kvant_home .
