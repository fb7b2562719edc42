# Issue 17, after MERGE3D=1 / MAX_SPLITS=16 became the defaults (run after `source bench/gpu_env.sh`): the decode
# attention GPU tests, Qwen3-0.6B bf16 logits against transformers, then Llama-3.1-8B bf16 TPOT alternating the new
# defaults and the old ones (KVANT_ATTN_MERGE3D=0 KVANT_ATTN_MAX_SPLITS=64), one process each. Ends in $OUT/r17o.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r17o.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
step tests 60 python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "rope_store_decode or decode_dispatch"
TAIL=1 step logits-qwen3 45 python -P bench/check_logits.py --config $C/qwen3-0.6b.json --quant bf16 --prompts 8 --new 16
LAT="bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64"
for i in 1 2; do
  TAIL=2 step lat-new-$i 40 python -P -m kvant.tui.cli $LAT --json $W/latency-new-$i.json
  KVANT_ATTN_MERGE3D=0 KVANT_ATTN_MAX_SPLITS=64 TAIL=2 step lat-old-$i 40 python -P -m kvant.tui.cli $LAT --json $W/latency-old-$i.json
done
