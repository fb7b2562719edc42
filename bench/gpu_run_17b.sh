# issue 17, second GPU batch (LM head + sampling in the decode graph): GPU tests, then TPOT/profile/W1 for this tree
# and for bench/base (main before it, made by the caller) on the same card, then logits vs transformers. Every step
# has its own timeout; the logs and JSON go to $OUT/work and are re-packed into $OUT/r.tgz after each step, so a
# cut-off run still returns what it finished.
C=bench/configs
W=$OUT/work; mkdir -p $W
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -3 "$W/log-$name.txt"; tar czf $OUT/r.tgz -C $W .; }
BASE=$PWD/bench/base
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
step tests 60 python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_sampling.py tests/kernels/test_rope_store.py tests/engine/test_engine_gpu.py
step lat 45 python -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64 --json $W/latency-llama.json
(cd $BASE && source bench/gpu_env.sh && step lat-base 45 python -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64 --json $W/latency-llama-base.json)
step prof 45 python -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1,64 --max-num-seqs 64 --top 14 --json $W/profile-llama.json
step logits-qwen3 30 python bench/check_logits.py --config $C/qwen3-0.6b.json --quant bf16 --prompts 8 --new 16
step w1-qwen3 30 python -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --json $W/w1-qwen3.json
step w1 45 python -m kvant.tui.cli bench throughput --model $C/llama-3.1-8b.json --json $W/w1-llama.json
(cd $BASE && source bench/gpu_env.sh && step prof-base 40 python -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1,64 --max-num-seqs 64 --top 14 --json $W/profile-llama-base.json)
step logits-llama 60 python bench/check_logits.py --config $C/llama-3.1-8b.json --quant bf16 --prompts 8 --new 16
