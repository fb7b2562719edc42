# Issue 21's GPU call: an 8B-shaped random checkpoint on disk, INT4 RTN (streamed), then the artifact served under
# --gpu-memory 24GiB twice in fresh processes: cold (empty Triton cache under KVANT_HOME), then warm with W1 through
# the capped engine. Results in $OUT.
export KVANT_HOME=/tmp/kvh PYTHONPATH=bench:$PYTHONPATH
unset TRITON_CACHE_DIR
rm -rf /tmp/kvh /tmp/b8 /tmp/a8
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
printf 'scheme: W4A16\ngroup_size: 128\nalgorithm: rtn\n' > /tmp/rtn.yaml
t=$(date +%s.%N)
timeout 60 python bench/stream_rss.py make --config bench/configs/llama-3.1-8b.json --tokenizer bench/configs --base /tmp/b8 --device cuda 2>&1 | tail -1
echo "make_s $(echo "$(date +%s.%N) - $t" | bc)"
timeout 60 /usr/bin/time -v python bench/stream_rss.py quantize --base /tmp/b8 --out /tmp/a8 --recipe /tmp/rtn.yaml --device cuda --json $OUT/quantize-int4-rtn.json > $OUT/log-quantize.txt 2>&1; echo rc=$?
grep -E "Maximum resident|Elapsed" $OUT/log-quantize.txt; tail -c 400 $OUT/log-quantize.txt | grep quantize_s
rm -rf /tmp/b8
timeout 75 python bench/serve_capped.py /tmp/a8 --gpu-memory 24GiB --json $OUT/serve-cold.json > $OUT/log-cold.txt 2>&1; echo rc=$?; tail -2 $OUT/log-cold.txt
timeout 90 python bench/serve_capped.py /tmp/a8 --gpu-memory 24GiB --w1 --json $OUT/serve-warm-w1.json > $OUT/log-warm.txt 2>&1; echo rc=$?; tail -2 $OUT/log-warm.txt
