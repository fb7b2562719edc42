# Source on a GPU machine that has torch/triton/transformers but no kvant install: maps the kvant namespace onto
# this checkout (no build step), the way an editable install would.
_kv_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_kv_site="$(mktemp -d)/site"
mkdir -p "$_kv_site/kvant"
for _d in artifact quantize engine eval tui kernels; do ln -s "$_kv_root/$_d" "$_kv_site/kvant/$_d"; done
ln -s "$_kv_root/bench/harness" "$_kv_site/kvant/bench"  # kvant.bench (pyproject.toml's package-dir)
export PYTHONPATH="$_kv_site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
