# One device call for issues 17 and 18 (run after `source bench/gpu_env.sh`): GPU tests of the tensor-core W4A16 GEMV
# and of the fused decode attention (both merge forms), the decode attention sweep on this tree and on an old tree
# (bench/old: three launches per layer), INT4 logits against the dequantized reference, and Llama-3.1-8B INT4 TPOT on
# this tree against bench/base (the tree before the GEMV went on the dispatch). Ends in $OUT/r18b.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r18b.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
step tests ${T_TESTS:-170} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py tests/engine/test_engine_gpu.py -k "${TESTS_K:-mma_gemv or rope_store_decode or repacked or engine_gpu}"
TAIL=2 step sweep-main 100 python -P bench/decode_attn_sweep.py --json $W/attn-main.json
(source bench/old/bench/gpu_env.sh; cd bench/old; TAIL=2 step sweep-old 60 python -P ../decode_attn_sweep.py --label old --json $W/attn-old.json)
step logits-int4 45 python -P bench/check_logits.py --config $C/qwen3-0.6b.json --quant int4 --prompts 8 --new 16
ENG="--model $C/llama-3.1-8b.json --quant int4 --output-len 32 --limit ${W1_LIMIT:-64}"
mkdir -p $W/now $W/base
TAIL=6 step int4-now 70 python -P bench/engine_quant_pass.py $ENG --out $W/now
(source bench/base/bench/gpu_env.sh; cd bench/base; TAIL=6 step int4-base 70 python -P bench/engine_quant_pass.py $ENG --out $W/base)
