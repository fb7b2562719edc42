# Issue 18: the Gluon async-wgmma INT4 tile, the smallest useful call (device time was short): the sweep on Llama's
# four g128 shapes (every candidate checked against the bf16-rounded reference before it is timed) against bf16
# cuBLAS and the dispatch, then the off-tile CUDA-graph tests. Ends in $OUT/r18w.tgz.
TGZ=r18w.tgz; source bench/gpu_lib.sh
python -c "import triton; print('triton', triton.__version__)" | tee $W/triton.txt
TAIL=40 step sweep ${T_SWEEP:-240} python -P bench/w4a16_wgmma_sweep.py --out $W/wgmma.json --rows ${ROWS:-16,64,128,256} --table $W/wgmma_tune.json
cp $W/wgmma_tune.json $OUT/ 2>/dev/null; cat $W/wgmma_tune.json
TAIL=12 step tests ${T_TESTS:-60} python -P -m pytest -q -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "wgmma_off_the_tiles"
