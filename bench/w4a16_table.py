"""Kernel table on Llama-3.1-8B's merged shapes: kvant's W4A16 kernels against torch's tinygemm INT4 kernel, bf16
cuBLAS, FP8 `_scaled_mm` (rowwise, GEMM only) and kvant's FP8 weight-only kernel, all in one run with the copy
bandwidth measured in that run. Every timed call reads a different weight copy (enough copies to stream >= 4x the L2),
captured in one CUDA graph per case; each kvant kernel is first checked against the torch reference.

    PYTHONUNBUFFERED=1 python bench/w4a16_table.py [--out DIR] [--rows 1,4,16,64,256]
"""
import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_bench import guarded, import_kernels, rel_err  # noqa: E402

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}  # (K, N)
GROUP = 128
STREAM_BYTES = 240e6  # each timed pass reads at least this much weight data (H100/H200 L2: 50-60 MB)


def copy_gbps() -> float:
    n = 1 << 30
    src, dst = torch.empty(n, dtype=torch.uint8, device="cuda"), torch.empty(n, dtype=torch.uint8, device="cuda")
    return 2 * n / graph_us([lambda: dst.copy_(src)], reps=10) / 1e3


def graph_us(fns, reps: int = 20) -> float:
    """Median GPU time of one call, the calls of `fns` (one per weight copy) captured back to back in a graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    for _ in range(3):
        g.replay()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / len(fns))
    return statistics.median(times)


def copies(nbytes: int) -> int:
    return max(2, min(32, math.ceil(STREAM_BYTES / nbytes)))


def int4_weights(k, n, c):
    from kvant.kernels.int4_pack import pack_int4

    return [(pack_int4(torch.randint(-8, 8, (n, k), device="cuda", dtype=torch.int8)),
             (torch.rand(n, k // GROUP, device="cuda") * 0.01 + 1e-3).to(torch.bfloat16)) for _ in range(c)]


def rows_for_shape(kmod, name, k, n, row_counts, hbm, all_variants=False, tune_too=False):
    out = []
    int4_bytes = n * k // 2 + n * (k // GROUP) * 2
    w4 = int4_weights(k, n, copies(int4_bytes))
    xs = {m: torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for m in row_counts}
    refs = {m: kmod.w4.w4a16_gemm_ref(xs[m], w4[0][0], w4[0][1], GROUP) for m in row_counts}

    def add(fmt, m, nbytes, fns, check=None):
        def run():
            err = rel_err(check(), refs[m]) if check else None
            us = graph_us(fns)
            return [dict(shape=name, k=k, n=n, m=m, format=fmt, us=round(us, 2), err=err,
                         pct_copy=round(100 * nbytes / us / 1e3 / hbm, 1))]
        out.extend(guarded(f"{name} m={m} {fmt}", run))

    w4k = kmod.w4
    from kvant.kernels import w4a16_fast_gemv, w4a16_layout, w4a16_repacked, w4a16_swapab
    from kvant.kernels.w4a16_tune import tune
    packs = [w4a16_layout.repack_w4(p, s, GROUP) for p, s in w4]  # the layout the engine makes at load
    for m in row_counts:
        x = xs[m]
        variants = {"int4 dispatch (checkpoint layout)": w4k.w4a16_gemm} if all_variants else {}
        if all_variants and m == 1:
            variants["int4 gemv"] = w4k.w4a16_gemv_triton
        if all_variants and m > 1:
            variants["int4 tile"] = w4k.w4a16_gemm_triton
        for fmt, fn in variants.items():
            add(fmt, m, int4_bytes, [lambda p=p, s=s, fn=fn: fn(x, p, s, GROUP) for p, s in w4],
                check=lambda fn=fn: fn(x, w4[0][0], w4[0][1], GROUP))
        repacked = {"int4 repacked dispatch": w4a16_repacked.w4a16_repacked_gemm}
        if m == 1:
            repacked["int4 fast gemv (planes)"] = lambda *a: w4a16_fast_gemv.w4a16_fast_gemv_triton(
                *a, config=w4a16_fast_gemv.FAST_GEMV_CONFIG[:5] + (False,))
            repacked["int4 fast gemv (pairs)"] = lambda *a: w4a16_fast_gemv.w4a16_fast_gemv_triton(
                *a, config=w4a16_fast_gemv.FAST_GEMV_CONFIG[:5] + (True,))
        repacked["int4 swap-AB"] = w4a16_swapab.w4a16_swapab_triton
        if m >= 64:
            repacked["int4 repacked dequant+mm"] = w4a16_swapab.w4a16_repacked_dequant_mm
        for fmt, fn in repacked.items():
            add(fmt, m, int4_bytes, [lambda q=q, s=s, z=z, fn=fn: fn(x, q, s, GROUP, z) for q, s, z in packs],
                check=lambda fn=fn: fn(x, *packs[0][:2], GROUP, packs[0][2]))
        if tune_too:  # the tuner's pick among the repacked kernels, then the dispatch that reads it from the table
            entry = guarded(f"{name} m={m} tune", lambda: [tune(x, packs[0][0], packs[0][1], GROUP, packs[0][2],
                                                                repacked=True)])
            if entry:
                print(f"{name} m={m} tuned: {entry[0]}", flush=True)
                add("int4 repacked tuned", m, int4_bytes,
                    [lambda q=q, s=s, z=z: w4a16_repacked.w4a16_repacked_gemm(x, q, s, GROUP, z) for q, s, z in packs],
                    check=lambda: w4a16_repacked.w4a16_repacked_gemm(x, *packs[0][:2], GROUP, packs[0][2]))
    del packs
    # tinygemm: torch's own INT4 layout (uint8 pairs -> int4pack), bf16 scale-and-zero [K / G, N, 2]
    tg = []
    for p, s in w4:
        q = kmod_unpack(p, k)
        u8 = ((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8)
        sz = torch.stack([s.t(), torch.zeros_like(s.t())], dim=-1).contiguous()
        tg.append((torch.ops.aten._convert_weight_to_int4pack(u8, 8), sz))
    del w4
    for m in row_counts:
        x = xs[m]
        add("tinygemm", m, int4_bytes, [lambda w=w, sz=sz: torch.ops.aten._weight_int4pack_mm(x, w, GROUP, sz)
                                        for w, sz in tg])
    del tg
    wb = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies(2 * n * k))]
    for m in row_counts:
        add("bf16 cuBLAS", m, 2 * n * k, [lambda w=w, x=xs[m]: x @ w.t() for w in wb])
    w8 = [(w.to(torch.float8_e4m3fn), torch.rand(1, n, device="cuda") * 0.01 + 1e-3) for w in wb[:copies(n * k)]]
    w8 += [(w8[i % len(w8)][0].clone(), w8[i % len(w8)][1].clone()) for i in range(len(w8), copies(n * k))]
    del wb
    for m in row_counts:
        x = xs[m]
        xq, xsc = x.to(torch.float8_e4m3fn), torch.rand(m, 1, device="cuda") + 0.5
        add("fp8 _scaled_mm", m, n * k, [lambda w=w, s=s: torch._scaled_mm(
            xq, w.t(), scale_a=xsc, scale_b=s, out_dtype=torch.bfloat16) for w, s in w8])
        add("fp8 W8A16 (kvant)", m, n * k, [lambda w=w, s=s: kmod.w8.w8a16_gemm(x, w, s.t()) for w, s in w8])
    return out


def kmod_unpack(p, k):
    from kvant.kernels.int4_pack import unpack_int4

    return (unpack_int4(p, k).to(torch.int32) + 8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT"))
    ap.add_argument("--rows", default="1,4,16,64,256")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--all", action="store_true", help="also the checkpoint-layout kernels (dispatch, GEMV, tile)")
    ap.add_argument("--tune", action="store_true",
                    help="also tune the repacked kernels per shape and rows ($KVANT_HOME/w4a16_tune.json, copied to --out)")
    a = ap.parse_args()
    kmod = import_kernels()
    row_counts = [int(r) for r in a.rows.split(",")]
    hbm = copy_gbps()
    print(f"device {torch.cuda.get_device_name()}, copy {hbm:.0f} GB/s", flush=True)
    rows = []
    for name in a.shapes.split(","):
        k, n = SHAPES[name]
        rows += rows_for_shape(kmod, name, k, n, row_counts, hbm, a.all, a.tune)
        torch.cuda.empty_cache()
        for r in rows:
            if r["shape"] == name:
                base = next(b["us"] for b in rows if b["shape"] == name and b["m"] == r["m"]
                            and b["format"] == "bf16 cuBLAS")
                r["vs_bf16"] = round(base / r["us"], 2)
                print(f"{name:8s} m={r['m']:4d} {r['format']:34s} {r['us']:8.2f} us {r['pct_copy']:5.1f}% copy "
                      f"{r['vs_bf16']:5.2f}x bf16 err {r['err']}", flush=True)
        if a.out:  # after each shape: a step stopped at its time limit keeps what it measured
            Path(a.out, "w4a16_table.json").write_text(json.dumps(dict(
                device=torch.cuda.get_device_name(), copy_GBps=hbm, group=GROUP, rows=rows), indent=1))
    if a.out and a.tune:
        from kvant.kernels.w4a16_tune import table_path
        Path(a.out, "w4a16_tune.json").write_text(table_path().read_text())


if __name__ == "__main__":
    main()
