# Issue 17, closing device call: the decode GEMM's GPU tests, then Llama-3.1-8B bf16 TPOT with kvant's decode GEMM
# and with cuBLAS only (KVANT_SKINNY_GEMM=0, the same tree otherwise) on this card, the profile, and W1 for Qwen3 and
# Llama. bench/seed/skinny_gemm.json (a table measured on an earlier call, if the caller carries one) is what a second
# start on the same card reads; shapes and cards it lacks are measured at start-up.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
step tests 50 python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "skinny or decode_dispatch"
LAT="bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64"
step lat 70 python -P -m kvant.tui.cli $LAT --json $W/latency-llama.json
KVANT_SKINNY_GEMM=0 step lat-cublas 40 python -P -m kvant.tui.cli $LAT --json $W/latency-llama-cublas.json
TAIL=34 step prof 40 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1,64 --max-num-seqs 64 --top 14 --json $W/profile-llama.json
step w1-qwen3 80 python -P -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --json $W/w1-qwen3.json
step w1 45 python -P -m kvant.tui.cli bench throughput --model $C/llama-3.1-8b.json --json $W/w1-llama.json
cp $KVANT_HOME/skinny_gemm.json $W/ 2>/dev/null; tar czf $OUT/r.tgz -C $W --exclude kvh .
