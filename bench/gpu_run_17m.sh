# Issue 17: decode attention with RoPE, the KV store and the split merge folded in (one launch per layer instead of
# three). GPU tests, logits against transformers, Llama-3.1-8B bf16 TPOT as base (bb63220, bench/base) / now / base /
# now on one card, and the profile. Ends in $OUT/r.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
step tests 150 python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py tests/engine/test_engine_gpu.py -k "rope_store_decode or decode_dispatch or engine_gpu"
step logits-llama 60 python -P bench/check_logits.py --config $C/llama-3.1-8b.json --quant bf16 --prompts 8 --new 16
LAT="bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64"
step lat-1 60 python -P -m kvant.tui.cli $LAT --json $W/latency-llama-1.json
(source bench/base/bench/gpu_env.sh; cd bench/base; step base-1 60 python -P -m kvant.tui.cli $LAT --json $W/latency-base-1.json)
step lat-2 45 python -P -m kvant.tui.cli $LAT --json $W/latency-llama-2.json
TAIL=34 step prof 45 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1,64 --max-num-seqs 64 --top 14 --json $W/profile-llama.json
