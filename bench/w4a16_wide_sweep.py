"""The wide W4A16 tile for 32..256 rows (kvant.kernels.w4a16_swapab.w4a16_wide_triton) over a config sweep, against
bf16 cuBLAS, the swap-AB tile, the tensor-core GEMV (the weight stays in registers) and dequantize + cuBLAS, on
Llama-3.1-8B's merged g128 shapes (and Qwen3-0.6B's), with the copy rate measured in the same run. Every candidate is
first checked against the torch reference on fresh random inputs, then timed as CUDA-graph replays over weight copies that L2
cannot hold. Compiles run first in parallel worker processes (bench/w4a16_gemv_sweep.warm_up).

    source bench/gpu_env.sh && python -P bench/w4a16_wide_sweep.py --out $OUT/wide.json [--rows 32,64,128,256] \
        [--table w4a16_tune.json]
"""
import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_bench import rel_err  # noqa: E402
import w4a16_gemv_sweep  # noqa: E402
from w4a16_gemv_sweep import SHAPES, copies, copy_rate, int4_operands, warm_up  # noqa: E402
from w4a16_table import graph_us  # noqa: E402

MAX_ERR = 2e-2
TUNED = ("wide", "swapab", "repacked_dequant", "mma_gemv")  # the formats timed here that the tuner's table can name
# the tensor-core GEMV (weight straight from its load into the MMA's registers, tokens as the narrow side) at 1-64
# rows (past 64: kvant.kernels.w4a16_mma_gemv.ROWS128_CONFIGS, past 128 ROWS256_CONFIGS, each also with SCALE_IN):
# (BLOCK_N, num_warps, num_stages, waves, prefetch[, pair, scale_in])
MMA_GEMV = [(64, 4, 1, 4, True), (128, 8, 1, 2, True), (128, 8, 3, 2, False), (256, 8, 1, 1, True)]


def configs(m: int) -> list[tuple]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, waves, scale_in): the token tile one or two MMA row
    blocks, 128 or 256 weight columns, K tiles of 64 or 128, one or two warpgroups, 3 stages, with or without a K
    split; the fp32-partial scaling (scale_in False) only at 64 x 128 tiles with two warpgroups"""
    out = []
    for bm in (64, 128) if m > 64 else (64,):
        for bn in (128, 256):
            for bk in (64, 128):
                for warps in (4, 8):
                    for waves in (1, 2):
                        out.append((bm, bn, bk, warps, 3, waves, True))
    out += [(64, 128, bk, 8, 3, waves, False) for bk in (64, 128) for waves in (1, 2)]
    return out


def sweep_shape(name, k, n, rows, rw_rate, wide_configs=configs):
    from kvant.kernels.w4a16_layout import w4a16_repacked_gemm_ref
    from kvant.kernels.w4a16_mma_gemv import (MAX_TILE, ROWS128_CONFIGS, ROWS128_MORE, ROWS256_CONFIGS,
                                          w4a16_mma_gemv_triton)
    from kvant.kernels.w4a16_swapab import w4a16_repacked_dequant_mm, w4a16_swapab_triton, w4a16_wide_triton

    group = 128
    _, _, (qweight, scales, zeros) = int4_operands(k, n, group, False)
    w_bytes = n * k // 2 + scales.numel() * 2
    c = copies(w_bytes)
    packs = [(qweight, scales, zeros)] + [(qweight.clone(), scales.clone(), None) for _ in range(c - 1)]
    out = []
    for m in rows:
        x = torch.randn(m, k, device=w4a16_gemv_sweep.DEVICE, dtype=torch.bfloat16)
        ref = w4a16_repacked_gemm_ref(x, qweight, scales, group, zeros)
        nbytes = w_bytes + 2 * m * (k + n)

        def measure(fmt, fn, config=None):
            out.append(dict(shape=name, k=k, n=n, m=m, format=fmt, config=config, copies=c,
                            **check_and_time(fn, x, packs, ref, nbytes, rw_rate, MAX_ERR)))

        for cf in wide_configs(m):
            measure("wide", lambda x, qw, s, z, cf=cf: w4a16_wide_triton(x, qw, s, group, z, config=cf), list(cf))
        measure("swapab", lambda x, qw, s, z: w4a16_swapab_triton(x, qw, s, group, z))
        if m > 64:  # the weight tile scaled in 16 bits, MMAs chained (weight rows x token columns)
            tok = min(256, triton.next_power_of_2(m))
            for cf in dict.fromkeys([(tok, 128, 64, 8, 3, 1, True), (128, 128, 64, 8, 3, 1, True),
                                     (128, 64, 64, 4, 3, 2, True)]):
                measure("swapab", lambda x, qw, s, z, cf=cf: w4a16_swapab_triton(x, qw, s, group, z, config=cf),
                        list(cf))
        gemv = (MMA_GEMV + [(64, 4, 1, 4, True, False, True), (128, 8, 1, 2, True, False, True)] if m <= 64 else
                ROWS128_CONFIGS + ROWS128_MORE if m <= 128 else ROWS256_CONFIGS)
        for cf in gemv if m <= MAX_TILE else ():
            measure("mma_gemv", lambda x, qw, s, z, cf=cf: w4a16_mma_gemv_triton(x, qw, s, group, z, config=cf),
                    list(cf))
        measure("repacked_dequant", lambda x, qw, s, z: w4a16_repacked_dequant_mm(x, qw, s, group, z))
    packs.clear()  # free the copies before the bf16 weights
    return add_bf16_rows(out, name, k, n, rows, rw_rate)


def check_and_time(fn, x, packs, ref, nbytes, rw_rate, max_err) -> dict:
    """fn(x, *packs[0]) against ref first; then, if within max_err, its time as CUDA-graph replays over every pack:
    {err, us, pct_copy} or {err?, error}. One broken candidate must not hide the others' numbers."""
    r = {}
    try:
        r["err"] = err = rel_err(fn(x, *packs[0]), ref)
        if not err < max_err:
            r["error"] = f"error {err:.3g} over {max_err}"
        else:
            us = graph_us([lambda p=p: fn(x, *p) for p in packs])
            r.update(us=round(us, 2), pct_copy=round(100 * nbytes / us / 1e3 / rw_rate, 1))
    except Exception as e:  # noqa: BLE001 - reported in the row
        r["error"] = f"{type(e).__name__}: {e}"[:300]
    return r


def add_bf16_rows(out, name, k, n, rows, rw_rate):
    """bf16 cuBLAS on the same shape at each row count (weight copies L2 cannot hold) appended to `out`, and every
    row's vs_bf16 = bf16 time / its time (> 1: faster than bf16); returns `out`."""
    wb = torch.randn(n, k, device=w4a16_gemv_sweep.DEVICE, dtype=torch.bfloat16)
    wbs = [wb] + [wb.clone() for _ in range(copies(2 * n * k) - 1)]
    for m in rows:
        x = torch.randn(m, k, device=w4a16_gemv_sweep.DEVICE, dtype=torch.bfloat16)
        us = graph_us([lambda w=w: x @ w.t() for w in wbs])
        nbytes = 2 * n * k + 2 * m * (k + n)
        out.append(dict(shape=name, k=k, n=n, m=m, format="bf16 cuBLAS", us=round(us, 2), copies=len(wbs),
                        pct_copy=round(100 * nbytes / us / 1e3 / rw_rate, 1)))
    del wbs
    torch.cuda.empty_cache()
    for r in out:
        b = next(o["us"] for o in out if o["m"] == r["m"] and o["format"] == "bf16 cuBLAS")
        if r.get("us"):
            r["vs_bf16"] = round(b / r["us"], 3)
    return out


def summary(rows_out) -> list[str]:
    lines = []
    for shape, m in sorted({(r["shape"], r["m"]) for r in rows_out}):
        rs = [r for r in rows_out if (r["shape"], r["m"]) == (shape, m) and r.get("us")]
        wide = sorted((r for r in rs if r["format"] == "wide"), key=lambda r: r["us"])

        def cell(fmt):
            r = next((r for r in rs if r["format"] == fmt), None)
            return f"{r['us']:7.2f} ({r.get('vs_bf16', 1):.2f}x)" if r else "   -   "
        top = "; ".join(f"{r['us']:.2f} {r['vs_bf16']:.2f}x {r['config']}" for r in wide[:3])
        gemv = min((r for r in rs if r["format"] == "mma_gemv"), key=lambda r: r["us"], default=None)
        gemv = f" | mma_gemv best: {gemv['us']:.2f} {gemv['vs_bf16']:.2f}x {gemv['config']}" if gemv else ""
        lines.append(f"{shape:14s} m={m:<3d} bf16 {cell('bf16 cuBLAS')} swapab {cell('swapab')} dequant+mm "
                     f"{cell('repacked_dequant')} | wide best: {top}{gemv}")
    return lines


def write_table(path, device, shapes, rows, results) -> None:
    """The fastest kernel per shape and row bucket so far, in kvant.kernels.w4a16_tune's on-disk format."""
    from kvant.kernels.w4a16_tune import key

    table = {}
    for name in shapes:
        k, n = SHAPES[name]
        for m in rows:
            rs = [r for r in results if (r["shape"], r["m"]) == (name, m) and r.get("us") and r["format"] in TUNED]
            if rs:
                best = min(rs, key=lambda r: r["us"])
                table[key(device, k, n, 128, False, m, repacked=True)] = [best["format"], best["config"]]
    Path(path).write_text(json.dumps(table, indent=0, sort_keys=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="JSON file, rewritten after each shape")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--rows", default="32,64,128,256")
    ap.add_argument("--table", default=None, help="write the picks here as a w4a16_tune.json")
    ap.add_argument("--wide", choices=("all", "default"), default="all",
                    help="the wide tile's configs to time: the whole sweep, or only its default (wide_config)")
    ap.add_argument("--workers", type=int, default=min(14, max(1, mp.cpu_count() - 2)))
    ap.add_argument("--warm-timeout", type=float, default=120.0, help="seconds the parallel compiles may take")
    a = ap.parse_args()
    start = time.time()
    shapes = [s.strip() for s in a.shapes.split(",")]
    rows = [int(r) for r in a.rows.split(",")]
    if a.wide == "all":
        wide_configs = configs
    else:
        from kvant.kernels.w4a16_swapab import wide_config

        def wide_configs(m):
            return [wide_config(m, 128)]
    tasks = [("wide", *SHAPES[s], 128, False, m, cf) for s in shapes for m in rows for cf in wide_configs(m)]
    warm_up(tasks, a.workers, a.warm_timeout)
    run_shapes(a.out, shapes, rows, lambda name, k, n, rw: sweep_shape(name, k, n, rows, rw, wide_configs), summary,
               write_table, a.table, start)


def run_shapes(out_path, shapes, rows, sweep, summarize, write_table, table_path=None, start=None) -> None:
    """The sweeps' driver: the copy rate, then `sweep(name, k, n, copy_rw_rate)` shape by shape, the JSON (device,
    versions, copy rate, rows, `summarize`'s lines) rewritten after each, and with table_path the tuner's table
    (`write_table(table_path, device, shapes, rows, results)`)."""
    start = start or time.time()
    rw, ro = copy_rate()
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  copy_rw_GBps=round(rw, 1), copy_read_GBps=round(ro, 1), pct_copy_of="copy_rw_GBps", rows=[])
    print(f"{result['device']}: copy {rw:.0f} GB/s read+write ({ro:.0f} read-only)", flush=True)
    for name in shapes:
        k, n = SHAPES[name]
        result["rows"] += sweep(name, k, n, rw)
        result["summary"] = summarize(result["rows"])
        result["seconds"] = round(time.time() - start, 1)
        Path(out_path).write_text(json.dumps(result, indent=1))
        if table_path:
            write_table(table_path, result["device"], shapes, rows, result["rows"])
        print("\n".join(summarize([r for r in result["rows"] if r["shape"] == name])), flush=True)
    print(f"done in {time.time() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
