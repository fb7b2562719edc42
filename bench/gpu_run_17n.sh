# One device call (after `source bench/gpu_env.sh`): issue 17's decode attention knobs and issue 18's 8-bit decode GEMM.
# 1. bench/decode_attn_sweep.py on this tree (MAX_SPLITS 64/16 x MERGE3D off/on) and on bench/old (three launches)
# 2. Llama-3.1-8B bf16 TPOT at batch 1 and 64: default knobs, then KVANT_ATTN_MERGE3D=1 KVANT_ATTN_MAX_SPLITS=16,
#    (REPEAT=1: then default again), one process each, and the profile of the default at batch 1
# 3. bench/w8_decode_sweep.py (FP8 weights, rows 1 and 16) for what time is left
# Ends in $OUT/r17n.tgz.
C=bench/configs
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"; tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/r17n.tgz -C $W --exclude kvh .; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
SW="--batches 1,8,64 --ctx 192,2048"
TAIL=1 step sweep-main 90 python -P bench/decode_attn_sweep.py $SW --max-splits 64,16 --json $W/attn-main.json
(source bench/old/bench/gpu_env.sh; cd bench/old; TAIL=1 step sweep-old 40 python -P ../decode_attn_sweep.py $SW --label old --json $W/attn-old.json)
LAT="bench latency --model $C/llama-3.1-8b.json --batch-sizes 1,64 --output-len 64"
TAIL=2 step lat-default 50 python -P -m kvant.tui.cli $LAT --json $W/latency-default.json
KVANT_ATTN_MERGE3D=1 KVANT_ATTN_MAX_SPLITS=16 TAIL=2 step lat-knobs 50 python -P -m kvant.tui.cli $LAT --json $W/latency-knobs.json
[ -n "$REPEAT" ] && TAIL=2 step lat-default-2 50 python -P -m kvant.tui.cli $LAT --json $W/latency-default-2.json
TAIL=30 step prof 45 python -P -m kvant.tui.cli bench profile --model $C/llama-3.1-8b.json --batch-sizes 1 --top 12 --json $W/profile-bf16.json
TAIL=1 step w8-sweep ${T_W8:-130} python -P bench/w8_decode_sweep.py --rows 1,16 --seconds $(( ${T_W8:-130} - 15 )) --json $W/w8-sweep.json
