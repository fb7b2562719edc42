# Issue 17, first device call of 2026-12-06 (third session): async scheduling and SiLU·mul fused into the down
# projection's decode GEMM. Correctness first (GPU tests, logits against transformers with both changes on), then
# Llama-3.1-8B bf16 TPOT at batch 1 and 64 alternating async scheduling on / off (one process each, twice), the
# profile, and W1 for Llama-3.1-8B with async on / off. Everything ends in $OUT/r.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $W/device.txt
step tests 150 python -P -m pytest -q -p no:cacheprovider -m gpu tests/engine/test_engine_gpu.py tests/kernels/test_sampling.py tests/kernels/test_gpu.py -k "engine_gpu or sampling or skinny or decode_dispatch"
step logits-qwen3 40 python -P bench/check_logits.py --config $C/qwen3-0.6b.json --quant bf16 --prompts 8 --new 16
step logits-llama 60 python -P bench/check_logits.py --config $C/llama-3.1-8b.json --quant bf16 --prompts 8 --new 16
LAT="bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64"
for r in 1 2; do
  step lat-$r 80 python -P -m kvant.tui.cli $LAT --json $W/latency-llama-$r.json
  step lat-sync-$r 45 python -P -m kvant.tui.cli $LAT --no-async-scheduling --json $W/latency-llama-sync-$r.json
done
TAIL=34 step prof 45 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1,64 --max-num-seqs 64 --top 14 --json $W/profile-llama.json
cp $KVANT_HOME/skinny_gemm.json $W/ 2>/dev/null; tar czf $OUT/r.tgz -C $W --exclude kvh .
