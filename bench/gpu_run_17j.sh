# Issue 17: W1 for Llama-3.1-8B and Qwen3-0.6B bf16 on the final tree of the session (async scheduling, per-sequence
# attention splits), and Llama-3.1-8B TPOT once more. Ends in $OUT/r.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $W/device.txt
step w1 50 python -P -m kvant.tui.cli bench throughput --model $C/llama-3.1-8b.json --json $W/w1-llama.json
step w1-qwen3 80 python -P -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --json $W/w1-qwen3.json
step lat 45 python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64 --json $W/latency-llama.json
