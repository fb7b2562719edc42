# Issue 17's whole "done when" list in one call, for the card the issue names when one is lent (run after
# `source bench/gpu_env.sh`): W1 of Llama-3.1-8B and Qwen3-0.6B bf16, Llama TPOT at batch 1 and 64, a profile of one
# decode step (kernels per layer, GPU and host time), greedy output against transformers on every architecture
# (Llama 3.1 RoPE scaling, Mistral, Qwen2 qkv bias, Qwen3 q/k norm), then the engine's and the decode kernels' GPU
# tests. Most important first: each step is tarred into $OUT/r17q.tgz as it ends.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/*.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r17q.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
TAIL=2 step w1-llama 90 python -P -m kvant.tui.cli bench throughput --model $C/llama-3.1-8b.json --workload W1 --json $W/w1-llama.json
TAIL=2 step w1-qwen3 80 python -P -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --workload W1 --json $W/w1-qwen3.json
TAIL=3 step lat 45 python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64 --json $W/latency-llama.json
TAIL=30 step prof 60 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1,64 --top 12 --json $W/profile-llama.json
for c in qwen3-0.6b llama-3.1-8b mistral-7b qwen2.5-7b; do
  TAIL=1 step logits-$c 70 python -P bench/check_logits.py --config $C/$c.json --quant bf16 --prompts 8 --new 16
done
step tests 150 python -P -m pytest -q -p no:cacheprovider -m gpu tests/engine/test_engine_gpu.py tests/kernels/test_gpu.py -k "engine or rope_store_decode or decode_dispatch"
