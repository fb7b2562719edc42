# Issue 18, after the engine fault was traced to fp32 scales (the wgmma tile had held them in a 16-bit shared buffer):
# the wgmma GPU tests (Llama shapes 1-256 rows, fp32 scales at 100-256; off-tile CUDA graphs), then the engines: bf16,
# INT4 with the static dispatch's wgmma tile on gate_up at 65-256 rows, and INT4 with it off (KVANT_WGMMA=0), for
# TPOT at batch 1/64 and W1 in one call. QUANTS picks engines. Ends in $OUT/r18ab.tgz.
C=bench/configs
TGZ=r18ab.tgz; source bench/gpu_lib.sh
TAIL=8 step tests ${T_TESTS:-100} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "wgmma and not wgmma_ws"
for q in ${QUANTS:-bf16 int4 int4-nowgmma}; do
  mkdir -p $W/$q
  TAIL=6 step $q ${T_ENGINE:-120} env KVANT_WGMMA=$([ $q = int4-nowgmma ] && echo 0 || echo 1) python -P bench/engine_quant_pass.py --model $C/llama-3.1-8b.json --quant ${q%-nowgmma} --output-len 32 --out $W/$q
done
