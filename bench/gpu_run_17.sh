# issue 17 GPU batch: correctness first (logits vs transformers), then TPOT b1/b64 and W1, each with its roofline
set -x
C=bench/configs
timeout 100 python bench/check_logits.py --config $C/llama-3.1-8b.json --quant bf16 --prompts 8 --new 16 > $OUT/logits-llama.jsonl
timeout 60 python bench/check_logits.py --config $C/qwen3-0.6b.json --quant bf16,int4 --prompts 8 --new 16 > $OUT/logits-qwen3.jsonl
timeout 80 python -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64 --json $OUT/latency-llama.json
timeout 90 python -m kvant.tui.cli bench throughput --model $C/llama-3.1-8b.json --json $OUT/w1-llama.json
timeout 60 python -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --json $OUT/w1-qwen3.json
cat $OUT/*.jsonl
