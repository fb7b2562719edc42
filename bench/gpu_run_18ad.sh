# Issue 18: the warp-specialized INT4 wgmma tile (kvant.kernels.w4a16_wgmma_ws): its GPU tests, then the wgmma sweep
# over its configs against bf16 cuBLAS and the dispatch in the same run. Ends in $OUT/r18ad.tgz.
TGZ=r18ad.tgz; source bench/gpu_lib.sh
TAIL=12 step tests ${T_TESTS:-90} python -P -m pytest -q -x -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k wgmma_ws
TAIL=40 step sweep ${T_SWEEP:-200} python -P bench/w4a16_wgmma_sweep.py --tile wgmma_ws --out $W/wgmma_ws.json --rows ${ROWS:-64,128,256}
