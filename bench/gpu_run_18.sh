# Issue #18's device call: the repacked W4A16 kernels' correctness on the GPU first (compiled, in CUDA graphs, the
# one-row GEMV included), then the kernel table on Llama-3.1-8B shapes (TUNE=1 also tunes the repacked kernels and
# returns $OUT/w4a16_tune.json), TPOT b1/b64 for bf16 and INT4 (QUANTS overrides), and with ARCHS=1 the sm_86/sm_89
# kernel selections for FP8/INT8/INT4 against the dequantized reference (issue #21). Each step has its own timeout; a
# failure does not stop the others. Results: $OUT/*.json, logs $OUT/log-*.txt. ROWS overrides the table's rows.
C=bench/configs
step() { local name=$1 t=$2; shift 2; echo "== $name"; timeout "$t" "$@" > "$OUT/log-$name.txt" 2>&1; echo "rc=$?"; tail -4 "$OUT/log-$name.txt"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
step gpu-tests 70 python -P -m pytest -q -x -p no:cacheprovider tests/kernels/test_gpu.py -k "repacked"
[ -n "$LOGITS" ] && step logits-qwen3 45 python bench/check_logits.py --config $C/qwen3-0.6b.json --quant int4 --prompts 8 --new 16
step table 150 python bench/w4a16_table.py --out $OUT --rows ${ROWS:-1,4,16,64,256} ${TUNE:+--tune}
[ -n "$TUNE" ] && mkdir -p "${KVANT_HOME:=$HOME/.cache/kvant}" && cp "$OUT/w4a16_tune.json" "$KVANT_HOME/w4a16_tune.json"
for q in ${QUANTS:-bf16 int4}; do
  step lat-$q 45 python -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant $q --batch-sizes 1,64 --output-len 64 --json $OUT/latency-llama-$q.json
done
if [ -n "$ARCHS" ]; then
  for arch in sm_89 sm_86; do
    step logits-$arch 60 python bench/check_logits.py --config $C/qwen3-0.6b.json --quant fp8,int8,int4 --kernel-arch $arch --prompts 8 --new 16
  done
fi
