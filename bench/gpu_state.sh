# One device call that records where main stands: logits vs transformers first, then TPOT b1/b64 and W1 for
# bf16/FP8/INT4 on Llama-3.1-8B shapes (random weights) and W1 on Qwen3-0.6B. Each step has its own timeout and
# failures do not stop the others. Results: $OUT/*.json, logs in $OUT/log-*.txt.
C=bench/configs
step() { local name=$1 t=$2; shift 2; echo "== $name"; timeout "$t" "$@" > "$OUT/log-$name.txt" 2>&1; echo "rc=$?"; tail -3 "$OUT/log-$name.txt"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
step logits-llama 100 python bench/check_logits.py --config $C/llama-3.1-8b.json --quant bf16 --prompts 8 --new 16
step logits-qwen3 80 python bench/check_logits.py --config $C/qwen3-0.6b.json --quant bf16,int4,fp8 --prompts 8 --new 16
for q in bf16 fp8 int4; do
  step lat-$q 80 python -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant $q --batch-sizes 1,64 --output-len 64 --json $OUT/latency-llama-$q.json
done
for q in bf16 fp8 int4; do
  step w1-$q 90 python -m kvant.tui.cli bench throughput --model $C/llama-3.1-8b.json --quant $q --json $OUT/w1-llama-$q.json
done
step w1-qwen3 60 python -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --json $OUT/w1-qwen3-bf16.json
