# Sourced by bench/gpu_run_*.sh on the GPU machine (after `source bench/gpu_env.sh`), with TGZ set to the archive's
# name: the work folder $W under $OUT, KVANT_HOME inside it with the seeded 16-bit picks, the card's name, and
# `step NAME SECONDS CMD...`, which runs CMD under a time limit into $W/log-NAME.txt, prints its exit code and last
# TAIL lines, and packs $W into $OUT/$TGZ after every step (what finished comes back even if the call is cut short).
W=$OUT/work; mkdir -p $W
export KVANT_HOME=$W/kvh; mkdir -p $KVANT_HOME; cp bench/seed/skinny_gemm.json $KVANT_HOME/ 2>/dev/null
step() {
  local name=$1 t=$2; shift 2
  echo "== $name $(date +%T)"; timeout "$t" "$@" > "$W/log-$name.txt" 2>&1; echo "rc=$?"
  tail -${TAIL:-3} "$W/log-$name.txt"; tar czf $OUT/$TGZ -C $W --exclude kvh .
}
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader | tee $W/device.txt
