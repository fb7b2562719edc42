"""The weight-only 8-bit decode GEMM (kvant.kernels.skinny_gemm with an FP8/INT8 weight and its per-row scale) over a
wide set of tile configs, against the W8A16 GEMM it replaces where picked (kvant.kernels.w8a16_gemm) and bf16 cuBLAS
on the same shape, on Llama-3.1-8B's merged shapes. CUDA-graph replays over enough weight copies that L2 holds none
(the start-up pick's own timer); every config is checked against the torch reference first. Stops after --seconds and
writes what it has.

    python -P bench/w8_decode_sweep.py --rows 1,16 --json out.json
"""
import argparse
import itertools
import json
import time

import torch
import torch.nn.functional as F

from kvant.kernels import skinny_gemm as sg
from kvant.kernels.w8a16_gemm import w8a16_gemm_triton

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}


def copies_us(fn, copies) -> float:
    """µs per call of fn(i) over `copies` weight copies, replayed from one CUDA graph."""
    return sg._graph_timer(lambda: [fn(i) for i in range(copies)]) / copies * 1e3


def w8_operands(name: str, wdtype: torch.dtype):
    """(k, n, w, copies of w that L2 cannot hold, bf16 weights of the shape for cuBLAS, fp32 row scale [N]) for one
    of SHAPES, an FP8 or INT8 weight."""
    k, n = SHAPES[name]
    w = (torch.randn(n, k, device="cuda") * 20).clamp(-127, 127)
    w = w.round().to(torch.int8) if wdtype == torch.int8 else w.to(wdtype)
    ws = sg._weight_copies(w)
    wb = [(torch.randn(n, k, device="cuda") / k**0.5).to(torch.bfloat16) for _ in range(len(ws) // 2 + 1)]
    return k, n, w, ws, wb, torch.rand(n, device="cuda") / (20 * k**0.5) + 1e-4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,16")
    ap.add_argument("--shapes", default="qkv,o,gate_up,down")
    ap.add_argument("--wdtype", default="fp8", choices=("fp8", "int8"))
    ap.add_argument("--seconds", type=float, default=150)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    start = time.time()
    wdtype = torch.float8_e4m3fn if a.wdtype == "fp8" else torch.int8
    out = {"device": torch.cuda.get_device_name(), "wdtype": a.wdtype, "results": []}
    for name in a.shapes.split(","):
        k, n, w, ws, wb, scale = w8_operands(name, wdtype)
        for m in [int(r) for r in a.rows.split(",")]:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            ref = sg.skinny_gemm_ref(x, w, None, scale=scale).float()
            res = {"shape": name, "k": k, "n": n, "rows": m, "copies": len(ws),
                   "w8a16_us": copies_us(lambda i: w8a16_gemm_triton(x, ws[i], scale), len(ws)),
                   "bf16_cublas_us": copies_us(lambda i: F.linear(x, wb[i]), len(wb))}
            timed = []
            for bn, bk, warps, stages, waves in itertools.product((32, 64, 128), (256, 512, 1024), (4, 8), (3, 5),
                                                                   (1, 2)):
                if time.time() - start > a.seconds:
                    break
                c = (bn, bk, warps, stages, waves)
                if (bn + 2 * sg.block_m(m)) * bk * stages > sg.SMEM_BUDGET:
                    continue
                try:
                    y = sg.skinny_gemm_triton(x, w, None, c, scale=scale).float()
                    if not torch.allclose(y, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item()):
                        print("wrong", name, m, c, flush=True)
                        continue
                    t = copies_us(lambda i, c=c: sg.skinny_gemm_triton(x, ws[i], None, c, scale=scale), len(ws))
                except Exception as exc:  # noqa: BLE001 - a config this card cannot compile or run is skipped
                    print("skip", c, type(exc).__name__, flush=True)
                    continue
                timed.append((t, c))
            timed.sort()
            cands = [list(c) for c in sg.candidates(m, w_bytes=1)]
            res["top"] = timed[:5]
            res["best_start_up_candidate"] = min((t for t in timed if list(t[1]) in cands), default=None)
            res["w8a16_weight_GBps"] = n * k * w.element_size() / res["w8a16_us"] / 1e3
            if timed:
                res["best_weight_GBps"] = n * k * w.element_size() / timed[0][0] / 1e3
                res["best_over_w8a16"] = timed[0][0] / res["w8a16_us"]
                res["best_over_bf16"] = timed[0][0] / res["bf16_cublas_us"]
            out["results"].append(res)
            print(json.dumps(res), flush=True)
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
