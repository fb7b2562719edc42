# Issue 18 (run after `source bench/gpu_env.sh`): the INT4 kernels at 16-128 rows, the tensor-core GEMV among them
# (bench/w4a16_wide_sweep.py, picks written to the tuner's table); Llama-3.1-8B TPOT b1/b64 for bf16 and for INT4 with
# that table; then the GEMV at 1-4 rows with one and two blocks prefetched (bench/w4a16_gemv_sweep.py, GEMV=1).
# Ends in $OUT/r18k.tgz.
C=bench/configs
TGZ=r18k.tgz; source bench/gpu_lib.sh
TAIL=30 step wide ${T_SWEEP:-200} python -P bench/w4a16_wide_sweep.py --out $W/wide.json --table $W/w4a16_tune.json \
  --shapes "llama qkv,llama o,llama gate_up,llama down" --rows ${ROWS:-16,32,64,128} --warm-timeout ${T_WARM:-90}
TAIL=3 step lat-bf16 60 python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant bf16 --batch-sizes 1,64 --output-len 64 --json $W/latency-bf16.json
TAIL=3 step lat-int4 60 python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant int4 --batch-sizes 1,64 --output-len 64 --json $W/latency-int4.json
cp $W/w4a16_tune.json $KVANT_HOME/ 2>/dev/null
TAIL=3 step lat-int4-tuned 60 python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant int4 --batch-sizes 1,64 --output-len 64 --json $W/latency-int4-tuned.json
[ -n "$GEMV" ] && TAIL=40 step gemv ${T_GEMV:-200} python -P bench/w4a16_gemv_sweep.py --out $W/gemv.json --shapes "llama gate_up,llama down,llama qkv,llama o" --warm-timeout 80
