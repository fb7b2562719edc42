# Issue 18, next call: (1) the INT4 engine fault with the wgmma picks, located (blocking launches, and
# bench/debug_wgmma_engine.py: each wgmma call logged and synced; then the same with PDL off instead); (2) the wgmma
# sweep with the register-operand configs.
# Carry bench/seed with wgmma_tune.json = bench/results/2026-12-07e-h200-issue18/18w/wgmma_tune.json. Ends in
# $OUT/r18y.tgz.
C=bench/configs
TGZ=r18y.tgz; source bench/gpu_lib.sh
cp bench/seed/wgmma_tune.json $KVANT_HOME/w4a16_tune.json
TAIL=30 step dbg 120 env CUDA_LAUNCH_BLOCKING=1 python -P bench/debug_wgmma_engine.py --model $C/llama-3.1-8b.json --quant int4 --output-len 8 --batch-sizes 64 --limit 8 --out $W
TAIL=30 step dbg-nopdl 120 env KVANT_PDL=0 python -P bench/debug_wgmma_engine.py --model $C/llama-3.1-8b.json --quant int4 --output-len 8 --batch-sizes 64 --limit 8 --out $W
rm -f $KVANT_HOME/w4a16_tune.json
TAIL=40 step sweep ${T_SWEEP:-240} python -P bench/w4a16_wgmma_sweep.py --out $W/wgmma.json --rows ${ROWS:-16,64,128,256}
