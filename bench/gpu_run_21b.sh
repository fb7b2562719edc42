# Issue 21's GPTQ device call: an 8B-shaped random bf16 checkpoint written to disk, then `kvant quantize` with the
# w4a16-gptq recipe through the streaming path (one decoder layer read from the shards at a time, outputs written as
# layers finish), 32 x 2048 calibration tokens as in the 2026-12-01 whole-model run (364 s, 33.6 GiB RSS, 7.48 GiB
# GPU). `/usr/bin/time -v` gives the quantize process's peak RSS; the script's JSON gives time and peak CUDA memory.
# Needs the tokenizer files in bench/seed/tok and compressed_tensors importable (.whl carried). CPU check at tiny size:
#   OUT=/tmp/o CONFIG=/tmp/tiny.json DEVICE=cpu SAMPLES=2 SEQ=64 bash bench/gpu_run_21b.sh
CONFIG=${CONFIG:-bench/configs/llama-3.1-8b.json} DEVICE=${DEVICE:-cuda} W=${WORK:-/tmp/gptq21}
R=$OUT/work; mkdir -p "$R"; rm -rf "$W"; mkdir -p "$W"
export KVANT_HOME=$W/kvh PYTHONPATH=bench${PYTHONPATH:+:$PYTHONPATH}
step() { local name=$1 t=$2; shift 2; echo "== $name $(date +%T)"; timeout "$t" "$@" > "$R/log-$name.txt" 2>&1
  echo "rc=$?"; tail -${TAIL:-3} "$R/log-$name.txt"; tar czf "$OUT/r21.tgz" -C "$R" .; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$R/device.txt"
step make 150 python -P bench/stream_rss.py make --config "$CONFIG" --tokenizer bench/seed/tok --base "$W/base" --device "$DEVICE"
TAIL=30 step quantize ${T_QUANT:-500} /usr/bin/time -v python -P bench/stream_rss.py quantize --base "$W/base" \
  --out "$W/art" --recipe w4a16-gptq --num-samples ${SAMPLES:-32} --seq-len ${SEQ:-2048} --device "$DEVICE" \
  --json "$R/quantize-gptq.json"
grep -E "Maximum resident|Elapsed" "$R/log-quantize.txt"
ls -la "$W/art" > "$R/artifact-ls.txt" 2>&1; cat "$R/artifact-ls.txt"
tar czf "$OUT/r21.tgz" -C "$R" .
