# Issues 17 and 18, one device call: GPU tests of the decode GEMM (kvant.kernels.skinny_gemm) and the in-kernel
# merge of attention splits; Llama-3.1-8B bf16 TPOT with kvant's decode GEMM, with cuBLAS only (KVANT_SKINNY_GEMM=0,
# same tree) and for bench/base (main before both, made by the caller), all on this card; profile; W1 (Llama, Qwen3);
# logits against transformers; then the W4A16 tuner at 128/256 rows with the wider swap-AB tiles and INT4/bf16
# engine passes that use its table. Each step has its own timeout; everything is re-packed into $OUT/r.tgz after each.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r.tgz -C $W --exclude kvh .; }
BASE=$PWD/bench/base
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
step tests 100 python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "skinny or decode_dispatch" tests/engine/test_engine_gpu.py
LAT="bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64"
step lat 150 python -P -m kvant.tui.cli $LAT --json $W/latency-llama.json
cp $KVANT_HOME/skinny_gemm.json $W/ 2>/dev/null
KVANT_SKINNY_GEMM=0 step lat-cublas 45 python -P -m kvant.tui.cli $LAT --json $W/latency-llama-cublas.json
(cd $BASE && source bench/gpu_env.sh && step lat-base 45 python -P -m kvant.tui.cli $LAT --json $W/latency-llama-base.json)
TAIL=34 step prof 45 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1,64 --max-num-seqs 64 --top 14 --json $W/profile-llama.json
step w1 50 python -P -m kvant.tui.cli bench throughput --model $C/llama-3.1-8b.json --json $W/w1-llama.json
step w1-qwen3 60 python -P -m kvant.tui.cli bench throughput --model $C/qwen3-0.6b.json --json $W/w1-qwen3.json
step logits-qwen3 40 python -P bench/check_logits.py --config $C/qwen3-0.6b.json --quant bf16 --prompts 8 --new 16
step logits-llama 60 python -P bench/check_logits.py --config $C/llama-3.1-8b.json --quant bf16 --prompts 8 --new 16
TAIL=12 step tune 110 python -P bench/w4a16_table.py --out $W --rows 128,256 --tune
cp $KVANT_HOME/w4a16_tune.json $W/ 2>/dev/null
for q in int4 bf16; do TAIL=4 step engine-$q 60 python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant $q --out $W --output-len 32; done
