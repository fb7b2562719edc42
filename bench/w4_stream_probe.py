"""How fast can a program stream an INT4 weight the way the tensor-core GEMV reads it? A read-only Triton kernel walks
an int32 [N, K/8] weight as kvant.kernels.w4a16_mma_gemv does (BLOCK_N rows per program, CHUNK words of each row per
step, K split for about `waves` programs per SM) and XORs what it loads, against the same walk over a tile-major copy
(each step's [BLOCK_N, CHUNK] tile contiguous) and bf16 cuBLAS at one row. The question it answers: is the GEMV's
~1.7 TB/s on an H100 (2026-12-07) a limit of 64-byte-per-row steps, or of the GEMV's own work?

    source bench/gpu_env.sh && python -P bench/w4_stream_probe.py --json $OUT/stream.json
"""
import argparse
import json

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kvant.kernels import skinny_gemm as sg
from kvant.kernels.splitk import split_count

SHAPES = {"gate_up": (4096, 28672), "qkv": (4096, 6144)}  # (K, N), Llama-3.1-8B


@triton.jit
def _stream_kernel(w_ptr, out_ptr, N, KW, STEPS_PER_SPLIT, TILED: tl.constexpr, BLOCK_N: tl.constexpr,
                   CHUNK: tl.constexpr, VEC: tl.constexpr):
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.max_contiguous(tl.arange(0, CHUNK), VEC)
    steps = KW // CHUNK
    acc = tl.zeros((BLOCK_N, CHUNK), dtype=tl.int32)
    first = pid_k * STEPS_PER_SPLIT
    for s in range(first, tl.minimum(first + STEPS_PER_SPLIT, steps)):
        if TILED:  # [N / BLOCK_N, steps, BLOCK_N, CHUNK]: one contiguous tile per step
            tile = ((pid_n * steps + s) * BLOCK_N).to(tl.int64) * CHUNK
            ptrs = w_ptr + tile + tl.arange(0, BLOCK_N)[:, None] * CHUNK + cols[None, :]
        else:
            ptrs = w_ptr + rows[:, None].to(tl.int64) * KW + s * CHUNK + cols[None, :]
        acc ^= tl.load(ptrs, eviction_policy="evict_first")
    tl.store(out_ptr + pid_k * N + rows, tl.xor_sum(acc, axis=1))


def stream(w, n, kw, tiled, block_n, chunk, warps, stages, waves, out):
    split, per = split_count(kw // chunk, n // block_n, torch.cuda.get_device_properties(0).multi_processor_count,
                             waves)
    _stream_kernel[(n // block_n, split)](w, out, n, kw, per, TILED=tiled, BLOCK_N=block_n, CHUNK=chunk,
                                          VEC=min(4, chunk), num_warps=warps, num_stages=stages)


def tile_major(w, block_n, chunk):
    n, kw = w.shape
    return w.view(n // block_n, block_n, kw // chunk, chunk).permute(0, 2, 1, 3).contiguous().view(n, kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = {"device": torch.cuda.get_device_name(), "rows": []}
    for name, (k, n) in SHAPES.items():
        kw = k // 8
        w = torch.randint(-2**31, 2**31 - 1, (n, kw), device="cuda", dtype=torch.int32)
        nbytes = w.numel() * 4
        wb = sg._weight_copies(torch.randn(n, k, device="cuda", dtype=torch.bfloat16))
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        us = sg._graph_timer(lambda: [F.linear(x, c) for c in wb]) / len(wb) * 1e3
        res["rows"].append({"shape": name, "kind": "bf16 cuBLAS, 1 row", "us": us, "GBps": n * k * 2 / us / 1e3})
        print(f"{name:8s} bf16 cuBLAS 1 row {us:7.2f} us {n * k * 2 / us / 1e3:7.0f} GB/s", flush=True)
        out = torch.empty(64 * n, device="cuda", dtype=torch.int32)
        for block_n, warps in ((64, 4), (128, 8)):
            for chunk in (16, 32, 64):
                for tiled in (False, True):
                    src = tile_major(w, block_n, chunk) if tiled else w
                    copies = sg._weight_copies(src)
                    for stages, waves in ((1, 4), (3, 2)):
                        try:
                            t = sg._graph_timer(lambda: [stream(c, n, kw, tiled, block_n, chunk, warps, stages, waves,
                                                                out) for c in copies]) / len(copies) * 1e3
                        except Exception as exc:  # noqa: BLE001 - a config this card cannot run is reported
                            print("skip", name, block_n, chunk, tiled, stages, waves, type(exc).__name__, flush=True)
                            continue
                        row = {"shape": name, "kind": "tiled" if tiled else "rows", "block_n": block_n,
                               "bytes_per_row_step": chunk * 4, "warps": warps, "stages": stages, "waves": waves,
                               "us": t, "GBps": nbytes / t / 1e3}
                        res["rows"].append(row)
                        print(f"{name:8s} {row['kind']:5s} BN {block_n:3d} {chunk * 4:3d} B/row-step st {stages} "
                              f"w {waves}: {t:7.2f} us {nbytes / t / 1e3:7.0f} GB/s", flush=True)
                    del copies
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
