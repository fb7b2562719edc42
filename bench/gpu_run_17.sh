# issue 17 GPU batch (after the fused RoPE + KV store): GPU kernel tests and logits vs transformers first, then
# `bench profile` b1/b64, TPOT b1/b64, W1 for Llama-3.1-8B bf16 and W1 for Qwen3-0.6B; "base" = this tree with
# engine/model.py from before the fused kernel (bench/base/, made by the caller), timed on the same card.
# Each step has its own timeout; failures do not stop the others. Results: $OUT/*.json, logs $OUT/log-*.txt.
C=bench/configs
step() { local name=$1 t=$2; shift 2; echo "== $name"; timeout "$t" "$@" > "$OUT/log-$name.txt" 2>&1; echo "rc=$?"; tail -4 "$OUT/log-$name.txt"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
step kernels 60 python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_rope_store.py tests/engine/test_engine_gpu.py
step logits-llama 90 python bench/check_logits.py --config $C/llama-3.1-8b.json --quant bf16 --prompts 8 --new 16
step logits-qwen3 40 python bench/check_logits.py --config $C/qwen3-0.6b.json --quant bf16 --prompts 8 --new 16
step prof 50 python -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1,64 --max-num-seqs 64 --top 12 --json $OUT/profile-llama.json
step lat 50 python -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64 --json $OUT/latency-llama.json
step w1 60 python -m kvant.tui.cli bench throughput --model $C/llama-3.1-8b.json --json $OUT/w1-llama.json
step w1-qwen3 40 python -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --json $OUT/w1-qwen3.json
cd bench/base && source bench/gpu_env.sh
step lat-base 50 python -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64 --json $OUT/latency-llama-base.json
step prof-base 50 python -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1,64 --max-num-seqs 64 --top 12 --json $OUT/profile-llama-base.json
