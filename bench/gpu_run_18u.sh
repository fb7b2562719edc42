# Issue 18: the Gluon async-wgmma INT4 tile (kvant.kernels.w4a16_wgmma), first run. GPU tests (Llama shapes at 1-256
# rows against the bf16-rounded reference; off-tile N/K in CUDA graphs), then the sweep against bf16 cuBLAS and the
# dispatch at 16-256 rows, which writes the picks where wgmma wins as a tuner table ($W/wgmma_tune.json, for
# bench/gpu_run_18v.sh). Ends in $OUT/r18u.tgz.
TGZ=r18u.tgz; source bench/gpu_lib.sh
python -c "import triton; print('triton', triton.__version__)" | tee $W/triton.txt
TAIL=25 step tests ${T_TESTS:-150} python -P -m pytest -q -x -p no:cacheprovider -m gpu tests/kernels/test_gpu.py -k "wgmma"
TAIL=40 step sweep ${T_SWEEP:-330} python -P bench/w4a16_wgmma_sweep.py --out $W/wgmma.json --rows ${ROWS:-16,32,64,128,256} --table $W/wgmma_tune.json
cp $W/wgmma_tune.json $OUT/ 2>/dev/null; cat $W/wgmma_tune.json
