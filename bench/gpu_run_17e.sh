# Issue 17, a repeat call: Llama-3.1-8B bf16 TPOT at batch 1 and 64 twice each with kvant's decode GEMM and with
# cuBLAS only (alternating, one process each, so that process-to-process variation shows), then W1 for Llama-3.1-8B
# and Qwen3-0.6B. Everything ends in $OUT/r.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $W/device.txt
LAT="bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64"
for r in 1 2; do
  step lat-$r 70 python -P -m kvant.tui.cli $LAT --json $W/latency-llama-$r.json
  KVANT_SKINNY_GEMM=0 step lat-cublas-$r 40 python -P -m kvant.tui.cli $LAT --json $W/latency-llama-cublas-$r.json
done
step w1 45 python -P -m kvant.tui.cli bench throughput --model $C/llama-3.1-8b.json --json $W/w1-llama.json
step w1-qwen3 80 python -P -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --json $W/w1-qwen3.json
cp $KVANT_HOME/skinny_gemm.json $W/ 2>/dev/null; tar czf $OUT/r.tgz -C $W --exclude kvh .
