# Issue #18's device call: the repacked W4A16 kernels' correctness on the GPU first (compiled, in CUDA graphs), then
# the kernel table on Llama-3.1-8B shapes and TPOT b1/b64 for bf16 and INT4. Each step has its own timeout; a failure
# does not stop the others. Results: $OUT/*.json, logs $OUT/log-*.txt. ROWS overrides the table's row counts.
C=bench/configs
step() { local name=$1 t=$2; shift 2; echo "== $name"; timeout "$t" "$@" > "$OUT/log-$name.txt" 2>&1; echo "rc=$?"; tail -4 "$OUT/log-$name.txt"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
step gpu-tests 60 python -P -m pytest -q -x -p no:cacheprovider tests/kernels/test_gpu.py -k "repacked"
[ -n "$LOGITS" ] && step logits-qwen3 45 python bench/check_logits.py --config $C/qwen3-0.6b.json --quant int4 --prompts 8 --new 16
step table 70 python bench/w4a16_table.py --out $OUT --rows ${ROWS:-1,4,16,64,256}
for q in bf16 int4; do
  step lat-$q 45 python -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant $q --batch-sizes 1,64 --output-len 64 --json $OUT/latency-llama-$q.json
done
