# Issue 18, next call: (0) the wgmma tile's GPU test at Llama's shapes and 1-256 rows; (1) the INT4 engine fault with the wgmma picks, located (blocking launches, and
# bench/debug_wgmma_engine.py: each wgmma call logged and synced; then the same with PDL off instead); (2) the wgmma
# sweep with the register-operand configs (since removed: bench/RESULTS.md, sixth session).
# Carry bench/seed with wgmma_tune.json = bench/results/2026-12-07e-h200-issue18/18w/wgmma_tune.json. Ends in
# $OUT/r18y.tgz.
C=bench/configs
TGZ=r18y.tgz; source bench/gpu_lib.sh
TAIL=15 step tests ${T_TESTS:-90} python -P -m pytest -q -x -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k wgmma_llama_shapes
python -c "import json, sys, torch; n = torch.cuda.get_device_name(); t = json.load(open(sys.argv[1])); json.dump({k.replace('NVIDIA H200', n): v for k, v in t.items()}, open(sys.argv[2], 'w'))" bench/seed/wgmma_tune.json $KVANT_HOME/w4a16_tune.json  # the H200's picks, keyed to this card
TAIL=30 step dbg 100 env CUDA_LAUNCH_BLOCKING=1 python -P bench/debug_wgmma_engine.py --model $C/llama-3.1-8b.json --quant int4 --output-len 8 --batch-sizes 64 --limit 8 --out $W
TAIL=30 step dbg-nopdl 100 env KVANT_PDL=0 python -P bench/debug_wgmma_engine.py --model $C/llama-3.1-8b.json --quant int4 --output-len 8 --batch-sizes 64 --limit 8 --out $W
rm -f $KVANT_HOME/w4a16_tune.json
TAIL=40 step sweep ${T_SWEEP:-240} python -P bench/w4a16_wgmma_sweep.py --out $W/wgmma.json --rows ${ROWS:-16,64,128,256}
