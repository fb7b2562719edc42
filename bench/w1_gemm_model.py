"""What W1's decode steps spend in the four Llama-3.1-8B linear layers, from a kernel sweep's µs per call: a
prediction, on the CPU, of what a change of INT4 kernel picks is worth in W1 before an engine runs it.

W1's 256 requests start together (max_num_seqs 256), so step s decodes every request with more than s + 1 tokens to
go: 256 rows at first, fewer as requests finish. Each step runs qkv, o, gate_up and down once per layer. A kernel's
time at a row count between two measured ones is read two ways, which bound it: linear interpolation, and the next
measured row count up (a tile kernel pads the rows to its token tile). Rows below the smallest measured count take
its time. Prefill is left out: its chunks are longer than 256 rows, where every arm runs the same kernels.

    python -P bench/w1_gemm_model.py SWEEP.json [SWEEP2.json ...] [--layers 32]

Each sweep is a `bench/w4a16_wgmma_sweep.py` (or `w4a16_wide_sweep.py`) output: rows of shape, m, format, config,
µs. Rows of later files replace earlier ones of the same (shape, m, format, config). Arms: bf16 cuBLAS, the dispatch,
"tiles": for each shape and measured row count the fastest wgmma config where it beats the dispatch by more than 3 %
(what `--table` writes), else the dispatch; and with `--roofline GBPS,TFLOPS` an INT4 kernel at the roofline of those
ceilings (g128 weights and bf16 scales read once, x read and the output written once, max of bytes over the copy rate
and FLOPs over the bf16 MMA rate; no launch cost).
"""
import argparse
import bisect
import json
from pathlib import Path

TILE_FORMATS = ("wgmma", "wgmma_ws")


def load(paths):
    rows = {}
    for p in paths:
        for r in json.loads(Path(p).read_text())["rows"]:
            if r.get("us"):
                rows[(r["shape"], r["m"], r["format"], json.dumps(r.get("config")))] = r
    return list(rows.values())


def arms(rows, margin=0.97, roofline=None):
    """{arm: {shape: {m: µs}}} for bf16, dispatch and tiles (and "int4 roofline" given (bytes/s, FLOP/s))."""
    out = {"bf16": {}, "dispatch": {}, "tiles": {}} | ({"int4 roofline": {}} if roofline else {})
    for shape, m in sorted({(r["shape"], r["m"]) for r in rows}):
        rs = [r for r in rows if (r["shape"], r["m"]) == (shape, m)]
        bf = next((r["us"] for r in rs if r["format"] == "bf16 cuBLAS"), None)
        disp = next((r["us"] for r in rs if r["format"] == "dispatch"), None)
        tile = min((r["us"] for r in rs if r["format"] in TILE_FORMATS), default=None)
        if bf is None or disp is None:
            continue
        out["bf16"].setdefault(shape, {})[m] = bf
        out["dispatch"].setdefault(shape, {})[m] = disp
        out["tiles"].setdefault(shape, {})[m] = tile if tile is not None and tile < margin * disp else disp
        if roofline:
            k, n = rs[0]["k"], rs[0]["n"]
            nbytes = n * k / 2 + n * k / 128 * 2 + 2 * m * (k + n)
            out["int4 roofline"].setdefault(shape, {})[m] = 1e6 * max(nbytes / roofline[0], 2 * m * n * k / roofline[1])
    return out


def at(curve: dict, m: int, how: str) -> float:
    ms = sorted(curve)
    if m <= ms[0]:
        return curve[ms[0]]
    if m >= ms[-1]:
        return curve[ms[-1]] * m / ms[-1]  # past the largest measured count: proportional (not reached in W1)
    i = bisect.bisect_left(ms, m)
    if ms[i] == m or how == "ceil":
        return curve[ms[i]]
    lo, hi = ms[i - 1], ms[i]
    return curve[lo] + (curve[hi] - curve[lo]) * (m - lo) / (hi - lo)


def decode_rows(max_num_seqs=256):
    from kvant.bench.workloads import workload

    reqs = workload("W1")
    rows = []
    for start in range(0, len(reqs), max_num_seqs):
        wave = reqs[start:start + max_num_seqs]
        for step in range(max(r.max_tokens for r in wave) - 1):
            rows.append(sum(r.max_tokens - 1 > step for r in wave))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweeps", nargs="+")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--roofline", default=None, help="GBPS,TFLOPS: add an INT4 arm at these ceilings")
    a = ap.parse_args()
    roof = tuple(float(v) * 1e9 * f for v, f in zip(a.roofline.split(","), (1, 1e3))) if a.roofline else None
    curves = arms(load(a.sweeps), roofline=roof)
    shapes = sorted(curves["bf16"])
    steps = decode_rows()
    print(f"W1: {len(steps)} decode steps, {sum(steps)} rows; shapes {', '.join(shapes)}")
    result = {}
    for how in ("interp", "ceil"):
        for arm, by_shape in curves.items():
            if set(by_shape) != set(shapes):
                continue
            result[(arm, how)] = a.layers * sum(at(by_shape[s], m, how) for m in steps for s in shapes) * 1e-6
    for how in ("interp", "ceil"):
        bf = result[("bf16", how)]
        line = ", ".join(f"{arm} {result[(arm, how)]:.3f} s ({bf / result[(arm, how)]:.3f}x bf16)"
                         for arm in curves if (arm, how) in result)
        print(f"{how:6s}: {line}; tiles save {result[('dispatch', how)] - result[('tiles', how)]:.3f} s")


if __name__ == "__main__":
    main()
