"""Where a CPU decode step's time goes, kvant against HF transformers: torch.profiler over N greedy decode tokens.

    OMP_NUM_THREADS=2 python -P bench/cpu_profile.py --dtype float32 --tokens 32 [--model PATH] [--json out.json]

Both sides generate after a warm-up call; a call making `--tokens` + 1 new tokens is profiled against one making 1,
and the difference over `--tokens` lists, per side, the ops of one decode step by self CPU time with their call
counts, so the ops kvant runs that HF does not (and the reverse) stand out.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))  # python -P leaves the script's folder off the path
from cpu_vs_hf import PROMPT, hf_runner, kvant_runner  # noqa: E402


def _ops(run, n: int) -> dict[str, tuple[int, float]]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(n)
    return {e.key: (e.count, e.self_cpu_time_total / 1e3) for e in prof.key_averages()}


def table(run, n: int, top: int) -> list[dict]:
    """Per decode step: the profile of a call making n + 1 tokens less that of a call making 1 (prefill and the
    first token), divided by n."""
    run(n + 1)
    one, full = _ops(run, 1), _ops(run, n + 1)
    rows = []
    for op, (count, ms) in full.items():
        c0, ms0 = one.get(op, (0, 0.0))
        rows.append({"op": op, "calls_per_step": (count - c0) / n, "self_ms_per_step": (ms - ms0) / n})
    rows.sort(key=lambda r: -r["self_ms_per_step"])
    return rows[:top]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or auto (an INT4 artifact)")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from kvant.engine.registry import resolve_model

    path = resolve_model(args.model)
    out = {"prompt": PROMPT, "dtype": args.dtype, "tokens": args.tokens, "threads": args.threads}
    out["kvant"] = table(kvant_runner(path, args.dtype), args.tokens, args.top)
    out["hf"] = table(hf_runner(path, args.dtype)[0], args.tokens, args.top)
    for side in ("kvant", "hf"):
        total = sum(r["self_ms_per_step"] for r in out[side])
        print(f"== {side} ({args.dtype}): top {args.top} ops of a decode step, {total:.2f} ms of self CPU time")
        for r in out[side]:
            print(f"  {r['self_ms_per_step']:8.3f} ms  {r['calls_per_step']:8.1f} calls  {r['op']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
