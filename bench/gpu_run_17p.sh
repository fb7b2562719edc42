# Issues 17/18 (run after `source bench/gpu_env.sh`): every GPU test (kernels and engine; the first run since the
# tests' replay_twice helper), Qwen3-0.6B bf16 logits against transformers, Llama-3.1-8B bf16 TPOT alternating the
# attention defaults (MERGE3D=1, MAX_SPLITS=16) with the old knobs (KVANT_ATTN_MERGE3D=0 KVANT_ATTN_MAX_SPLITS=64),
# one process each, then Qwen3-0.6B bf16 over the whole W1. Ends in $OUT/r17p.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r17p.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
step tests ${T_TESTS:-250} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py tests/engine/test_engine_gpu.py
TAIL=1 step logits-qwen3 45 python -P bench/check_logits.py --config $C/qwen3-0.6b.json --quant bf16 --prompts 8 --new 16
LAT="bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64"
for i in 1 2; do
  TAIL=2 step lat-new-$i 40 python -P -m kvant.tui.cli $LAT --json $W/latency-new-$i.json
  KVANT_ATTN_MERGE3D=0 KVANT_ATTN_MAX_SPLITS=64 TAIL=2 step lat-old-$i 40 python -P -m kvant.tui.cli $LAT --json $W/latency-old-$i.json
done
TAIL=2 step w1-qwen3 ${T_W1:-80} python -P -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --workload W1 --json $W/w1-qwen3-bf16.json
