# Issue 18: the warp-specialized INT4 wgmma tile (kvant.kernels.w4a16_wgmma_ws): its GPU tests, then the wgmma sweep
# with its configs in place of the single-partition tile's (the sweep reads CONFIGS and the entry point at call time),
# against bf16 cuBLAS and the dispatch in the same run. Ends in $OUT/r18ad.tgz.
TGZ=r18ad.tgz; source bench/gpu_lib.sh
TAIL=12 step tests ${T_TESTS:-90} python -P -m pytest -q -x -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k wgmma_ws
TAIL=40 step sweep ${T_SWEEP:-200} python -P -c "
import sys; sys.argv = ['w4a16_wgmma_sweep.py', '--out', '$W/wgmma_ws.json', '--rows', '${ROWS:-64,128,256}']
sys.path.insert(0, 'bench')
import kvant.kernels.w4a16_wgmma as b, kvant.kernels.w4a16_wgmma_ws as w
b.CONFIGS = w.CONFIGS; b.w4a16_wgmma = w.w4a16_wgmma_ws
import w4a16_wgmma_sweep as s; s.main()"
