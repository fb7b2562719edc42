#!/usr/bin/env bash
# `make test`'s runner: one pytest process per test folder (each folder's models, engines and KV pools are freed when
# its process ends; one process holding them all outgrows a 24 GiB machine), JOBS folders at a time, the longest
# first, then the SOLO folders one at a time on an otherwise idle machine. Each folder's output is printed as one
# block when it ends. Every folder runs; any failure fails the run.
# Usage: BIN=.venv/bin JOBS=2 bash tests/run_folders.sh tests/a/ tests/b/ ...
set -u
BIN=${BIN:-.venv/bin}
JOBS=${JOBS:-2}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# longest first (seconds on the 2-core CI machine, 2026-12-06), so that the last folders to start are short ones
ORDER="e2e quantize engine tui kernels eval bench hub"
# run after the others, alone: tests/server asserts that /health answers within 0.1 s while a large request is parsed
# and tokenized, which holds on an idle machine; beside another folder on 2 cores it missed by 3-30 ms in two of six
# fresh-clone runs of 2026-12-08
SOLO="server"
ordered=() solo=()
for name in $ORDER; do
  for d in "$@"; do [ "${d%/}" = "tests/$name" ] && ordered+=("$d"); done
done
for name in $SOLO; do
  for d in "$@"; do [ "${d%/}" = "tests/$name" ] && solo+=("$d"); done
done
for d in "$@"; do
  case " $ORDER $SOLO " in *" $(basename "$d") "*) ;; *) ordered+=("$d") ;; esac
done
run_one() {
  local d=$1 log start rc=0
  log="$logs/$(echo "$d" | tr / _).log"
  start=$(date +%s)
  "$BIN/python" -P -m pytest -q -ra "$d" > "$log" 2>&1 || rc=$?
  [ "$rc" = 0 ] || echo "$d" >> "$logs/failed"
  flock "$logs/print.lock" bash -c 'echo "== $1"; cat "$2"; echo "== $1 took $3 s (exit $4)"' _ "$d" "$log" \
    "$(( $(date +%s) - start ))" "$rc"
}
# JOBS folders share the machine's cores: each process's torch gets its share of them (OpenMP threads that outnumber
# the cores spin against each other: quantize took 635 s beside another folder with two threads each, 257 s alone)
cores=$(nproc)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / JOBS > 0 ? cores / JOBS : 1 ))}
export -f run_one
export BIN logs OMP_NUM_THREADS
printf '%s\n' "${ordered[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one "$1"' _ {}
for d in "${solo[@]}"; do run_one "$d"; done
if [ -s "$logs/failed" ]; then
  echo "FAILED in: $(tr '\n' ' ' < "$logs/failed")"
  exit 1
fi
