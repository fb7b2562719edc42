"""Per (card, shape, group, rows) choice of W4A16 kernel and tile config, measured once and kept on disk so that
start-up stays fast: `$KVANT_HOME/w4a16_tune.json` (KVANT_HOME defaults to `$XDG_CACHE_HOME/kvant`). `tune()` fills
it (a bench or an explicit warm-up calls it, never a CUDA-graph capture); `lookup()` reads it."""
import functools
import json
import os
import time
from pathlib import Path

import torch
import triton

from kvant.kernels.w4a16_dequant import w4a16_dequant_mm_triton
from kvant.kernels.w4a16_fast_gemv import w4a16_fast_gemv_triton
from kvant.kernels.w4a16_gemv import w4a16_gemv_triton
from kvant.kernels.w4a16_mma_gemv import (MAX_TILE, ROWS128_CONFIGS, ROWS128_MORE, ROWS256_CONFIGS,
                                          w4a16_mma_gemv_triton)
from kvant.kernels.w4a16_swapab import w4a16_repacked_dequant_mm, w4a16_swapab_triton, w4a16_wide_triton
from kvant.kernels.w4a16_tiles import w4a16_gemm_planes_triton, w4a16_gemm_triton
from kvant.kernels.w4a16_wgmma import w4a16_wgmma
from kvant.kernels.w4a16_wgmma_ws import w4a16_wgmma_ws

KERNELS = {"gemv": w4a16_gemv_triton, "planes": w4a16_gemm_planes_triton, "tile": w4a16_gemm_triton,
           "dequant": w4a16_dequant_mm_triton,
           # the repacked layout's kernels (kvant.kernels.w4a16_layout): what the engine runs after load
           "fast_gemv": w4a16_fast_gemv_triton, "swapab": w4a16_swapab_triton,
           "repacked_dequant": w4a16_repacked_dequant_mm, "mma_gemv": w4a16_mma_gemv_triton,
           "wide": w4a16_wide_triton,
           # a table may name the Gluon wgmma tiles (bench/w4a16_wgmma_sweep.py --table); they are not among the tuner's
           # candidates: the engine's fault of 2026-12-07 (fp32 scales, fixed) showed that a fault poisons the CUDA
           # context, which the tuner's try/except cannot undo, and the tiles have run in one engine only so far
           "wgmma": w4a16_wgmma, "wgmma_ws": w4a16_wgmma_ws}
REPACKED = ("fast_gemv", "swapab", "repacked_dequant", "mma_gemv", "wide", "wgmma", "wgmma_ws")
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # a call with m rows uses the first bucket >= m
_table: dict[str, list] | None = None


def table_path() -> Path:
    home = os.environ.get("KVANT_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvant"
    return Path(home) / "w4a16_tune.json"


def bucket(m: int) -> int | None:
    return next((b for b in ROW_BUCKETS if m <= b), None)


def key(device_name: str, k: int, n: int, group_size: int, asym: bool, m: int, repacked: bool = False) -> str:
    layout = "|repacked" if repacked else ""
    return f"{device_name}{layout}|K{k}|N{n}|g{group_size}|{'asym' if asym else 'sym'}|m{bucket(m)}"


@functools.lru_cache(maxsize=None)
def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _load() -> dict[str, list]:
    global _table
    if _table is None:
        try:
            _table = json.loads(table_path().read_text())
        except (OSError, ValueError):
            _table = {}
    return _table


def lookup(x, weight_packed, group_size, weight_zero_point, repacked: bool = False):
    """(kernel function, config) tuned for this call's card, shape, layout and row bucket, or None. `repacked`:
    weight_packed/weight_zero_point are repack_w4's qweight/zeros."""
    m, k = x.shape
    if bucket(m) is None:
        return None
    name = _device_name(x.device)
    hit = _load().get(key(name, k, weight_packed.shape[0], group_size, weight_zero_point is not None, m, repacked))
    if hit is None:
        return None
    kernel, config = hit
    return KERNELS[kernel], (tuple(config) if config is not None else None)


def repacked_candidates(m: int, group_size: int) -> list[tuple[str, tuple | None]]:
    out: list[tuple[str, tuple | None]] = []
    if m == 1 and group_size & (group_size - 1) == 0:
        out += [("fast_gemv", (bn, bk, 4, 3, waves, pairs)) for bn in (16, 32) for bk in (512, 1024)
                for waves in (2, 4) for pairs in (False, True)]
    if m <= MAX_TILE and group_size >= 32 and group_size & (group_size - 1) == 0:
        # register prefetch (1 stage) or Triton's shared-memory pipeline; one or two warpgroups
        if m <= 64:
            out += [("mma_gemv", (bn, warps, stages, waves, stages == 1)) for bn, warps in ((64, 4), (128, 8))
                    for stages in (1, 3) for waves in (2, 4)]
            if m <= 16:  # two blocks in flight per thread: more bytes in flight where the weight is all there is
                out += [("mma_gemv", (64, 4, 1, waves, 2)) for waves in (2, 4)]
                out += [("mma_gemv", (64, 4, 1, 4, True, True)), ("mma_gemv", (128, 8, 1, 2, True, True))]  # pairs
            else:  # Triton's pipeline, blocks scaled in 16 bits, 32- or 64-token tiles (the 128-256-row winner)
                out += [("mma_gemv", (128, 8, 3, 1, False, False, True, 64)),
                        ("mma_gemv", (128, 8, 3, 2, False, False, True, 32))]
        elif m <= 128:  # also with the block scaled in 16 bits (MMAs chained, fewer registers), and in token tiles
            out += [("mma_gemv", c) for c in ROWS128_CONFIGS + ROWS128_MORE]
        else:
            out += [("mma_gemv", c) for c in ROWS256_CONFIGS]
    if group_size % 16 == 0:
        bm = min(128, max(16, triton.next_power_of_2(m)))
        bk = group_size & -group_size if group_size & -group_size < 128 else 128
        out += [("swapab", (bm, bn, bk, warps, stages, waves)) for bn in (64, 128) for warps in (4, 8)
                for stages in (3, 4) for waves in (1, 2)]
        if m > 64:  # prefill-like row counts: wider weight tiles, fewer stages (registers hold the dequantized tile)
            out += [("swapab", (bm2, bn, bk, warps, stages, 1)) for bm2 in (64, 128) for bn in (128, 256)
                    for warps in (4, 8) for stages in (2, 3) if (bm2, bn) != (bm, 128) or stages == 2]
        if m >= 32:  # the wide tile: tokens on the MMA's 64-row side (bench/w4a16_wide_sweep.py sweeps more)
            out += [("wide", (64 if m <= 64 else bm2, bn, min(64, bk), 8, stages, waves, True)) for bm2 in (64, 128)
                    for bn in (128, 256) for stages in (3, 4) for waves in (1, 2) if m > 64 or bm2 == 64]
    if m >= 16:
        out.append(("repacked_dequant", None))
    return out


def candidates(m: int, group_size: int) -> list[tuple[str, tuple | None]]:
    out: list[tuple[str, tuple | None]] = []
    if m == 1:
        out += [("gemv", (bn, bk, 4, 3, waves, True, pairs)) for bn in (16, 32) for bk in (512, 1024)
                for waves in (2, 4) for pairs in (False, True)]
    bm = max(16, triton.next_power_of_2(m)) if m <= 64 else 64
    bk = 128 if group_size % 128 == 0 else group_size & -group_size
    out += [("planes", (min(bm, 64), bn, bk, warps, 3, waves)) for bn in (64, 128) for warps in (4, 8)
            for waves in (2, 4) if m <= 64]
    if group_size % 16 == 0:
        tk = min(group_size & -group_size, 128)
        out += [("tile", (min(bm, 128), bn, tk, warps, 3, waves)) for bn in (64, 128) for warps in (4, 8)
                for waves in (1, 2)]
    if m >= 16:
        out.append(("dequant", None))
    return out


def _time(fn, timer) -> float:
    if timer is not None:
        return timer(fn)
    if torch.cuda.is_available():
        return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def tune(x, weight_packed, weight_scale, group_size, weight_zero_point=None, timer=None, save: bool = True,
         repacked: bool = False):
    """Time every candidate on these operands, keep the fastest in the table (on disk when `save`); returns it.
    `repacked`: the operands are repack_w4's (qweight, scales, zeros) and the repacked kernels compete. A candidate
    whose output strays from the torch reference is never timed, so a kernel wrong on this card cannot be picked."""
    from kvant.kernels.w4a16_gemm import w4a16_gemm_ref  # here: kvant.kernels.w4a16_gemm imports this module
    from kvant.kernels.w4a16_layout import w4a16_repacked_gemm_ref

    m, k = x.shape
    args = (x, weight_packed, weight_scale, group_size, weight_zero_point)
    ref = (w4a16_repacked_gemm_ref if repacked else w4a16_gemm_ref)(*args).float()
    tol = dict(atol=2e-2 * max(ref.abs().max().item(), 1e-6), rtol=2e-2)
    best = None
    for kernel, config in (repacked_candidates if repacked else candidates)(m, group_size):
        fn = KERNELS[kernel]
        call = (lambda fn=fn: fn(*args)) if config is None else (lambda fn=fn, c=config: fn(*args, config=c))
        try:
            if not torch.allclose(call().float(), ref, **tol):
                continue
            t = _time(call, timer)
        except Exception:  # noqa: BLE001 - a config this card or shape cannot compile or run is skipped
            continue
        if best is None or t < best[0]:
            best = (t, kernel, config)
    name = _device_name(x.device)
    entry = [best[1], list(best[2]) if best[2] is not None else None]
    _load()[key(name, k, weight_packed.shape[0], group_size, weight_zero_point is not None, m, repacked)] = entry
    if save:
        path = table_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_table, indent=0, sort_keys=True))
        tmp.replace(path)
    return entry
