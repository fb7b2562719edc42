# Issue 17, a repeat on whatever card comes (asked for an H200): the logits check, Llama-3.1-8B bf16 TPOT at batch
# 1 and 64 twice (async scheduling on, the default) and once with it off, the profile, and W1 for Llama-3.1-8B and
# Qwen3-0.6B. Everything ends in $OUT/r.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $W/device.txt
step logits-llama 60 python -P bench/check_logits.py --config $C/llama-3.1-8b.json --quant bf16 --prompts 8 --new 16
LAT="bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64"
step lat-1 80 python -P -m kvant.tui.cli $LAT --json $W/latency-llama-1.json
step lat-sync 45 python -P -m kvant.tui.cli $LAT --no-async-scheduling --json $W/latency-llama-sync.json
step lat-2 45 python -P -m kvant.tui.cli $LAT --json $W/latency-llama-2.json
TAIL=34 step prof 45 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1,64 --max-num-seqs 64 --top 14 --json $W/profile-llama.json
step w1 50 python -P -m kvant.tui.cli bench throughput --model $C/llama-3.1-8b.json --json $W/w1-llama.json
step w1-qwen3 80 python -P -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --json $W/w1-qwen3.json
cp $KVANT_HOME/skinny_gemm.json $W/ 2>/dev/null; tar czf $OUT/r.tgz -C $W --exclude kvh .
