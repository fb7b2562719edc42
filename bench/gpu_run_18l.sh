# Issue 18 (run after `source bench/gpu_env.sh`): GPU tests of the INT4 dispatch (tensor-core GEMV to 64 rows and at
# 65-128 rows below gate_up's size, SiLU·mul fused only at <= 4 rows); Llama-3.1-8B TPOT b1/b64 for bf16 and INT4 with
# no tuned table, then INT4's whole W1 (bench/engine_quant_pass.py, W1=1); then the INT4 streaming probe
# (bench/w4_stream_probe.py); with GEMV=1 the GEMV sweep at 1-4 rows (pairs of blocks among its configs). Ends in $OUT/r18l.tgz.
C=bench/configs
TGZ=r18l.tgz; source bench/gpu_lib.sh
TAIL=2 step tests ${T_TESTS:-60} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "silu_mul_fused or repacked_families or mma_gemv_in_a_cuda_graph"
for q in bf16 int4; do
  TAIL=3 step lat-$q 60 python -P -m kvant.tui.cli bench latency --model $C/llama-3.1-8b.json --quant $q --batch-sizes 1,64 --output-len 64 --json $W/latency-$q.json
done
[ -n "$W1" ] && TAIL=6 step int4-w1 ${T_ENGINE:-105} python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant int4 --output-len 32 --out $W
[ -n "$GEMV" ] && TAIL=20 step gemv ${T_GEMV:-120} python -P bench/w4a16_gemv_sweep.py --out $W/gemv.json --shapes "llama gate_up,llama down,llama qkv,llama o" --warm-timeout 70
TAIL=60 step probe ${T_PROBE:-150} python -P bench/w4_stream_probe.py --json $W/stream.json
