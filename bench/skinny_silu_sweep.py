"""Down projection with SiLU·mul fused into kvant's decode GEMM, against what runs without the fusion, over a wider
set of tile configs than the start-up pick tries. Timed as CUDA-graph replays over enough weight copies that L2
holds none (kvant.kernels.skinny_gemm's own timer), each config checked against the torch reference first.
Usage (GPU): python -P bench/skinny_silu_sweep.py --k 14336 --n 4096 --rows 1,2,4,8,16 --json out.json
--plain: the plain kernel (no SiLU·mul) against cuBLAS alone, on any shape (qkv, o)."""
import argparse
import itertools
import json

import torch
import torch.nn.functional as F

from kvant.kernels import skinny_gemm as sg
from kvant.kernels.activation import silu_and_mul


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=14336)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--rows", default="1,2,4,8,16")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plain", action="store_true", help="no SiLU·mul: the plain kernel against cuBLAS")
    a = ap.parse_args()
    fuse = not a.plain
    w = (torch.randn(a.n, a.k, device="cuda") / a.k**0.5).to(torch.bfloat16)
    ws = sg._weight_copies(w)
    out = {"device": torch.cuda.get_device_name(), "k": a.k, "n": a.n, "copies": len(ws), "rows": {}}
    for m in [int(r) for r in a.rows.split(",")]:
        x = torch.randn(m, (2 if fuse else 1) * a.k, device="cuda", dtype=torch.bfloat16)
        act = silu_and_mul if fuse else (lambda t: t)
        ref = sg.skinny_gemm_ref(x, w, None, silu_mul=fuse).float()
        res = {"cublas_us": sg._graph_timer(lambda: [F.linear(act(x), wi) for wi in ws]) / len(ws) * 1e3}
        plain = []
        for c in sg.candidates(m):
            t = sg._graph_timer(lambda c=c: [sg.skinny_gemm_triton(act(x), wi, None, c) for wi in ws])
            plain.append((t / len(ws) * 1e3, c))
        res["plain_best_us"], res["plain_best"] = min(plain)
        fused = []
        for bn, bk, warps, stages, waves in itertools.product((32, 64, 128), (128, 256, 512), (4, 8), (3, 4),
                                                               (1, 2, 4)):
            c = (bn, bk, warps, stages, waves)
            if (bn + (2 if fuse else 1) * sg.block_m(m)) * bk * 2 * stages > sg.SMEM_BUDGET:
                continue
            try:
                y = sg.skinny_gemm_triton(x, w, None, c, silu_mul=fuse).float()
                if not torch.allclose(y, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item()):
                    continue
                t = sg._graph_timer(lambda c=c: [sg.skinny_gemm_triton(x, wi, None, c, fuse) for wi in ws])
            except Exception as exc:  # noqa: BLE001
                print("skip", c, type(exc).__name__)
                continue
            fused.append((t / len(ws) * 1e3, c))
        fused.sort()
        res["fused_top"] = fused[:5]
        res["fused_in_candidates"] = min(f for f in fused if list(f[1]) in [list(c) for c in sg.candidates(m, fuse)])
        base = min(res["cublas_us"], res["plain_best_us"])
        res["best_fused_over_baseline"] = fused[0][0] / base
        out["rows"][m] = res
        print(m, json.dumps(res), flush=True)
        if a.json:
            open(a.json, "w").write(json.dumps(out, indent=1))
    if a.json:
        open(a.json, "w").write(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
