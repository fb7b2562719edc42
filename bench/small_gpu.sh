# Issue 21's GPU call: an 8B-shaped random checkpoint on disk, INT4 RTN (model-free, shards written as layers
# finish), the bf16 base refused under a cap it cannot fit, then the artifact served under --gpu-memory 24GiB twice in
# fresh processes: cold (empty KVANT_HOME: Triton cache and tuned table; page cache dropped where allowed), then warm
# with W1 through the capped engine. Results in $OUT. Checked on the CPU at tiny sizes with
#   OUT=/tmp/o CONFIG=/tmp/tiny.json DEVICE=cpu W1_LIMIT=4 bash bench/small_gpu.sh
# Needs python only (no bc); compressed_tensors must be importable (quantize validates the config through it).
CONFIG=${CONFIG:-bench/configs/llama-3.1-8b.json} DEVICE=${DEVICE:-cuda} CAP=${CAP:-24GiB} SMALL_CAP=${SMALL_CAP:-12GiB}
W=${WORK:-/tmp/small21}
export KVANT_HOME=$W/kvh PYTHONPATH=bench${PYTHONPATH:+:$PYTHONPATH}
unset TRITON_CACHE_DIR
rm -rf "$W"; mkdir -p "$W"
now() { python3 -c 'import time; print(time.time())'; }
since() { python3 -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 1))" "$1"; }
step() { local name=$1 t=$2; shift 2; echo "== $name"; local s; s=$(now)
  timeout "$t" "$@" > "$OUT/log-$name.txt" 2>&1; echo "rc=$? wall_s=$(since "$s")"; tail -3 "$OUT/log-$name.txt"; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
printf 'scheme: W4A16\ngroup_size: 128\nalgorithm: rtn\n' > "$W/rtn.yaml"
step make 120 python bench/stream_rss.py make --config "$CONFIG" --tokenizer bench/configs --base "$W/base" --device "$DEVICE"
step quantize 120 /usr/bin/time -v python bench/stream_rss.py quantize --base "$W/base" --out "$W/art" \
  --recipe "$W/rtn.yaml" --device "$DEVICE" --json "$OUT/quantize-int4-rtn.json"
grep -E "Maximum resident|Elapsed" "$OUT/log-quantize.txt"
[ "$DEVICE" = cuda ] && step refuse 60 python bench/serve_capped.py "$W/base" --gpu-memory "$SMALL_CAP" \
  --expect-refusal --json "$OUT/refuse-bf16.json"
rm -rf "$W/base"
# the cold start reads the artifact from disk, not from the page cache, where the machine allows it
[ "$DEVICE" = cuda ] && { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo "page cache dropped" || echo "page cache kept"; }
step cold 90 python bench/serve_capped.py "$W/art" --gpu-memory "$CAP" --json "$OUT/serve-cold.json"
step warm 150 python bench/serve_capped.py "$W/art" --gpu-memory "$CAP" --w1 ${W1_LIMIT:+--w1-limit $W1_LIMIT} \
  --json "$OUT/serve-warm-w1.json"
du -sh "$W/art" "$KVANT_HOME"
