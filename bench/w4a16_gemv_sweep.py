"""The tensor-core GEMV for 1..4 rows (kvant.kernels.w4a16_mma_gemv) over a config sweep, against bf16 cuBLAS, torch's
tinygemm INT4 kernel and the repacked kernels the dispatch runs today (one-row GEMV, swap-AB), on Llama-3.1-8B and
Qwen3-0.6B merged shapes at g128 (symmetric; one asymmetric g128 and one g32 case on qkv), with the copy rate measured
in the same run. Every candidate is first checked against the torch reference on fresh random inputs, then timed as
CUDA-graph replays over enough weight copies (>= 150 MB per replay) that L2 holds none. Triton compiles run first in
parallel worker processes (one CUDA context each) that fill the shared Triton cache, so the timed process only loads.

    source bench/gpu_env.sh && python -P bench/w4a16_gemv_sweep.py --out $OUT/gemv.json
"""
import argparse
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_bench import rel_err  # noqa: E402
from w4a16_table import graph_us  # noqa: E402

SHAPES = {  # name: (K, N)
    "llama qkv": (4096, 6144), "llama o": (4096, 4096), "llama gate_up": (4096, 28672), "llama down": (14336, 4096),
    "qwen qkv": (1024, 4096), "qwen o": (2048, 1024), "qwen gate_up": (1024, 6144), "qwen down": (3072, 1024)}
ROWS = (1, 2, 4)
# (BLOCK_N, num_warps, num_stages, waves, prefetch): one warpgroup (64 rows) or two (128, 8 warps), or one warpgroup
# repeated (128 and 256 rows: more words per thread per block); register prefetch against Triton's cp.async pipeline
# (3 stages) against neither (which shows whether the x-tile fence stalls the prefetch); waves = programs per SM
# before the K split stops (more splits: more bytes in flight, more partial-sum traffic)
# Bytes in flight per SM = programs resident per SM (registers: 79-84 per thread at 1-16 rows, 127 with pairs; sm_90
# ptxas, 2026-12-07) x bytes per block (BLOCK_N x 64 B; pairs twice that): the fence before each block's MMA
# (MEMBAR.ALL.CTA, for x's store to shared memory) waits for every load the thread has in flight, so prefetching
# further ahead adds nothing, and waves past what fits add only split-K work
CONFIGS = [(64, 4, 1, 4, True), (64, 4, 1, 6, True), (64, 4, 1, 8, True), (128, 8, 1, 2, True),
           (128, 8, 1, 3, True), (128, 8, 1, 4, True), (128, 8, 3, 2, False), (64, 4, 1, 4, 2),
           (64, 4, 1, 4, True, True), (64, 4, 1, 8, True, True), (128, 8, 1, 2, True, True),
           (128, 8, 1, 3, True, True)]  # prefetch 2: two blocks ahead; sixth field: pairs of blocks
# 5-64 rows: the defaults there, pairs of blocks, and Triton's pipeline with blocks scaled in 16 bits in 32- or
# 64-token tiles (the 128-256-row winner; 79-127 registers at 32-64 tokens, sm_90 ptxas: two or three programs per SM)
MID_CONFIGS = [(64, 4, 1, 4, True), (256, 8, 1, 1, True), (128, 8, 1, 2, True), (64, 4, 1, 4, True, True),
               (128, 8, 1, 2, True, True), (64, 4, 1, 8, True, True), (128, 8, 3, 1, False, False, True, 64),
               (128, 8, 3, 2, False, False, True, 32), (64, 4, 3, 2, False, False, True, 32)]
# (shape, group, asym) checked and timed at 1 and 4 rows with a few configs (each group size compiles anew)
EXTRA = [("llama qkv", 128, True), ("llama qkv", 32, False)]
EXTRA_CONFIGS = [(64, 4, 1, 4, True), (64, 4, 3, 4, False), (128, 8, 1, 2, True), (128, 8, 3, 2, False)]
STREAM_BYTES = 150e6
DEVICE = "cuda"  # a CPU smoke run of sweep_shape (interpreter, fake timer) sets "cpu"
MAX_ERR = 2e-2


# ---- operands ----
def int4_operands(k, n, group, asym, seed=0):
    """(packed, scale, zp) in compressed-tensors' layout and the repacked (qweight, scales, zeros); codes u = q + 8."""
    from kvant.kernels.int4_pack import pack_int4
    from kvant.kernels.w4a16_layout import repack_w4

    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randint(-8, 8, (n, k), device=DEVICE, dtype=torch.int8, generator=g)
    scale = (torch.rand(n, k // group, device=DEVICE, generator=g) * 0.01 + 1e-3).to(torch.bfloat16)
    zp = None
    if asym:
        # zero points of whole words of 8 rows
        z = torch.randint(-8, 8, (k // group, n + (-n) % 8), device=DEVICE, dtype=torch.int8, generator=g)
        zp = pack_int4(z).t().contiguous()
    packed = pack_int4(q)
    return q, (packed, scale, zp), repack_w4(packed, scale, group, zp)


def copies(nbytes: int) -> int:
    return max(2, min(256, math.ceil(STREAM_BYTES / nbytes)))


def copy_rate() -> tuple[float, float]:
    """(read + write GB/s, read-only GB/s) of a 1 GiB device-to-device copy."""
    n = 1 << 30
    src, dst = torch.empty(n, dtype=torch.uint8, device=DEVICE), torch.empty(n, dtype=torch.uint8, device=DEVICE)
    us = graph_us([lambda: dst.copy_(src)], reps=10)
    return 2 * n / us / 1e3, n / us / 1e3


def tinygemm(q, scale, group):
    # torch's layout: uint8 pairs of codes u = q + 8 -> int4pack (innerKTiles 8); bf16 scale-and-zero [K / G, N, 2]
    # with w = (u - 8) * scale + zero
    u = (q.to(torch.int32) + 8)
    u8 = ((u[:, ::2] << 4) | u[:, 1::2]).to(torch.uint8)
    sz = torch.stack([scale.t(), torch.zeros_like(scale.t())], dim=-1).contiguous()
    w = torch.ops.aten._convert_weight_to_int4pack(u8, 8)
    return lambda x: torch.ops.aten._weight_int4pack_mm(x, w, group, sz)


# ---- parallel compile warm-up ----
def _warm(tasks):
    # one worker: run each (kernel, k, n, group, asym, m, config) once on zeros; compiles land in the shared Triton
    # cache, where the timed process finds them
    from kvant.kernels.w4a16_fast_gemv import w4a16_fast_gemv_triton
    from kvant.kernels.w4a16_mma_gemv import w4a16_mma_gemv_triton
    from kvant.kernels.w4a16_swapab import w4a16_swapab_triton, w4a16_wide_triton

    kernels = {"mma_gemv": w4a16_mma_gemv_triton, "fast_gemv": w4a16_fast_gemv_triton, "swapab": w4a16_swapab_triton,
               "wide": w4a16_wide_triton}
    done = 0
    for kernel, k, n, group, asym, m, config in tasks:
        qweight = torch.zeros(n, k // 8, dtype=torch.int32, device=DEVICE)
        scales = torch.ones(k // group, n, dtype=torch.bfloat16, device=DEVICE)
        zeros = torch.full_like(scales, 8.0) if asym else None
        x = torch.zeros(m, k, dtype=torch.bfloat16, device=DEVICE)
        try:
            if config is None:
                kernels[kernel](x, qweight, scales, group, zeros)
            else:
                kernels[kernel](x, qweight, scales, group, zeros, config=config)
            done += 1
        except Exception as e:  # noqa: BLE001 - the timed pass reports the failure with its config
            print(f"warm-up {kernel} {config} m={m}: {type(e).__name__}: {e}", flush=True)
    torch.cuda.synchronize()
    return done


def warm_up(tasks, workers: int, timeout: float) -> None:
    """Compile every task once, spread over `workers` processes by compile key (the constexprs and the integer
    specialisations a launch makes) so that no two workers compile the same kernel."""
    from kvant.kernels.splitk import split_count

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    by_key = {}
    for kernel, k, n, group, asym, m, config in tasks:
        key = (kernel, k, n, group, asym, m)
        if kernel == "mma_gemv":
            vec = min(4, group // 32)
            split, per = split_count(k // (32 * vec), triton.cdiv(n, config[0]), sms, config[3])
            key = (config, group, asym, m == 1, triton.next_power_of_2(m), split, per == 1, per % 16 == 0)
        elif kernel == "wide":  # ints specialise on == 1 and % 16 (the split count is a runtime int)
            bm, bn, bk, waves = config[0], config[1], config[2], config[5]
            split, per = split_count(k // bk, triton.cdiv(m, bm) * triton.cdiv(n, bn), sms, waves)
            key = (kernel, tuple(config), split == 1, split % 16 == 0, per == 1, per % 16 == 0, m % 16 == 0, group,
                   asym)
        by_key.setdefault(key, (kernel, k, n, group, asym, m, config))
    jobs = [[] for _ in range(workers)]
    for i, task in enumerate(by_key.values()):
        jobs[i % workers].append(task)
    start = time.time()
    with mp.get_context("spawn").Pool(workers) as pool:
        pending = pool.map_async(_warm, [j for j in jobs if j])
        try:
            done = sum(pending.get(timeout))
        except mp.TimeoutError:  # the timed pass compiles whatever is missing
            done = "some"
    print(f"warm-up: {done} of {len(by_key)} compiles in {time.time() - start:.1f} s on {workers} workers", flush=True)


# ---- one shape ----
def sweep_shape(name, k, n, group, asym, rows, configs, rw_rate):
    from kvant.kernels.w4a16_fast_gemv import w4a16_fast_gemv_triton
    from kvant.kernels.w4a16_layout import w4a16_repacked_gemm_ref
    from kvant.kernels.w4a16_mma_gemv import w4a16_mma_gemv_triton
    from kvant.kernels.w4a16_swapab import w4a16_swapab_triton

    q, _, (qweight, scales, zeros) = int4_operands(k, n, group, asym)
    w_bytes = n * k // 2 + scales.numel() * 2 * (2 if asym else 1)
    c = copies(w_bytes)
    packs = [(qweight, scales, zeros)] + [(qweight.clone(), scales.clone(), None if zeros is None else zeros.clone())
                                          for _ in range(c - 1)]
    out = []
    for m in rows:
        x = torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16)
        ref = w4a16_repacked_gemm_ref(x, qweight, scales, group, zeros)
        nbytes = w_bytes + 2 * m * (k + n)

        def row(fmt, us, err=None, config=None, error=None):
            r = dict(shape=name, k=k, n=n, group=group, asym=asym, m=m, format=fmt, config=config, err=err,
                     copies=c, bytes=nbytes, error=error)
            if us is not None:
                r.update(us=round(us, 2), GBps=round(nbytes / us / 1e3, 1),
                         pct_copy=round(100 * nbytes / us / 1e3 / rw_rate, 1))
            out.append(r)
            return r

        def measure(fmt, fn, config=None, check=True):
            try:
                err = rel_err(fn(x, *packs[0]), ref) if check else None
                if err is not None and not err < MAX_ERR:
                    return row(fmt, None, err, config, f"error {err:.3g} over {MAX_ERR}")
                return row(fmt, graph_us([lambda p=p: fn(x, *p) for p in packs]), err, config)
            except Exception as e:  # noqa: BLE001 - one broken candidate must not hide the others' numbers
                return row(fmt, None, None, config, f"{type(e).__name__}: {e}"[:300])

        for config in configs:
            measure("mma_gemv", lambda x, qw, s, z, cf=config: w4a16_mma_gemv_triton(x, qw, s, group, z, config=cf),
                    list(config))
        if m == 1 and group & (group - 1) == 0:
            measure("fast_gemv", lambda x, qw, s, z: w4a16_fast_gemv_triton(x, qw, s, group, z))
        if group % 16 == 0:
            measure("swapab", lambda x, qw, s, z: w4a16_swapab_triton(x, qw, s, group, z))
        if not asym:  # tinygemm's zero is a float offset, not a code: only the symmetric case is the same weight
            try:
                tg = tinygemm(q, scales.t(), group)
                err = rel_err(tg(x), ref)
                tgs = [tg] + [tinygemm(q, scales.t(), group) for _ in range(copies(w_bytes) - 1)]
                row("tinygemm", graph_us([lambda f=f: f(x) for f in tgs]), err)
                del tgs
            except Exception as e:  # noqa: BLE001 - torch's private op may change its signature
                row("tinygemm", None, error=f"{type(e).__name__}: {e}"[:300])
    packs.clear()  # free the copies before the bf16 weights
    wb = torch.randn(n, k, device=DEVICE, dtype=torch.bfloat16)
    wbs = [wb] + [wb.clone() for _ in range(copies(2 * n * k) - 1)]
    for m in rows:
        x = torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16)
        us = graph_us([lambda w=w: x @ w.t() for w in wbs])
        nbytes = 2 * n * k + 2 * m * (k + n)
        out.append(dict(shape=name, k=k, n=n, group=group, asym=asym, m=m, format="bf16 cuBLAS", us=round(us, 2),
                        bytes=nbytes, GBps=round(nbytes / us / 1e3, 1),
                        pct_copy=round(100 * nbytes / us / 1e3 / rw_rate, 1), copies=len(wbs)))
    del wbs
    torch.cuda.empty_cache()
    for r in out:  # ratios: time of the baseline / time of this row (> 1: faster)
        for base in ("bf16 cuBLAS", "tinygemm"):
            b = next((o.get("us") for o in out if o["m"] == r["m"] and o["format"] == base), None)
            if b and r.get("us"):
                r["vs_" + base.split()[0]] = round(b / r["us"], 2)
    return out


def summary(rows_out) -> list[str]:
    lines = []
    keys = sorted({(r["shape"], r["group"], r["asym"], r["m"]) for r in rows_out})
    for shape, group, asym, m in keys:
        rs = [r for r in rows_out if (r["shape"], r["group"], r["asym"], r["m"]) == (shape, group, asym, m)]
        mma = [r for r in rs if r["format"] == "mma_gemv" and r.get("us")]
        best = min(mma, key=lambda r: r["us"]) if mma else None

        def cell(fmt):
            r = next((r for r in rs if r["format"] == fmt and r.get("us")), None)
            return f"{r['us']:7.2f} {r['pct_copy']:5.1f}%" if r else "      -       "
        old = "fast_gemv" if m == 1 else "swapab"
        b = "-"
        if best:
            ratios = " ".join(f"{best[key]:.2f}x {label}" for key, label in (("vs_tinygemm", "tinygemm"),
                                                                             ("vs_bf16", "bf16")) if best.get(key))
            b = f"{best['us']:7.2f} {best['pct_copy']:5.1f}% {ratios} {best['config']}"
        lines.append(f"{shape:20s} g{group:<3d}{'a' if asym else 's'} m={m}  bf16 {cell('bf16 cuBLAS')}  tinygemm "
                     f"{cell('tinygemm')}  {old} {cell(old)}  mma best {b}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="JSON file, rewritten after each shape")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--rows", default=",".join(map(str, ROWS)), help="row counts (past 4: MID_CONFIGS)")
    ap.add_argument("--workers", type=int, default=min(14, max(1, mp.cpu_count() - 2)))
    ap.add_argument("--warm-timeout", type=float, default=75.0, help="seconds the parallel compiles may take")
    a = ap.parse_args()
    start = time.time()
    shapes = [s.strip() for s in a.shapes.split(",")]
    wanted = tuple(int(r) for r in a.rows.split(","))
    cases, names = [], []
    for s in shapes:
        small, mid = tuple(r for r in wanted if r <= 4), tuple(r for r in wanted if r > 4)
        for rs, cfs in ((small, CONFIGS), (mid, MID_CONFIGS)):
            if rs:
                cases.append((SHAPES[s], 128, False, rs, cfs))
                names.append(s)
    for s, g, asym in EXTRA if min(wanted) <= 4 else ():
        if s in shapes:
            cases.append((SHAPES[s], g, asym, (1, 4), EXTRA_CONFIGS))
            names.append(f"{s} g{g}{' asym' if asym else ''}")
    tasks = []
    for (k, n), g, asym, rows, cfs in cases:
        for m in rows:
            tasks += [("mma_gemv", k, n, g, asym, m, cf) for cf in cfs]
            tasks += [("fast_gemv", k, n, g, asym, m, None)] if m == 1 else []
            tasks += [("swapab", k, n, g, asym, m, None)]
    warm_up(tasks, a.workers, a.warm_timeout)
    rw, ro = copy_rate()
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  copy_rw_GBps=round(rw, 1), copy_read_GBps=round(ro, 1), pct_copy_of="copy_rw_GBps", rows=[])
    print(f"{result['device']}: copy {rw:.0f} GB/s read+write ({ro:.0f} read-only)", flush=True)
    for name, ((k, n), group, asym, rows, cfs) in zip(names, cases):
        result["rows"] += sweep_shape(name, k, n, group, asym, rows, cfs, rw)
        result["summary"] = summary(result["rows"])
        result["seconds"] = round(time.time() - start, 1)
        Path(a.out).write_text(json.dumps(result, indent=1))
        print("\n".join(summary([r for r in result["rows"] if r["shape"] == name])), flush=True)
    print(f"done in {time.time() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
