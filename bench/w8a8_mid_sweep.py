"""FP8 and INT8 W8A8 GEMMs at the batch sizes of a busy decode step (17-256 rows), on Llama-3.1-8B's merged shapes:
kvant's scaled GEMM (kvant.kernels.scaled_gemm) over tile configs with and without split-K, against the vendor path
(FP8: torch._scaled_mm rowwise; INT8: torch._int_mm plus its scale epilogue) and bf16 cuBLAS on the same shape. CUDA-
graph replays over enough weight copies that L2 holds none. Every config is checked against the torch reference
before it is timed. Stops after --seconds and writes what it has.

    python -P bench/w8a8_mid_sweep.py --rows 32,64,128,256 --json out.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kvant.kernels.fp8_gemm import fp8_gemm_ref, fp8_gemm_scaled_mm
from kvant.kernels.int8_gemm import int8_gemm_int_mm, int8_gemm_ref
from kvant.kernels.scaled_gemm import default_config, scaled_gemm_triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from w8_decode_sweep import copies_us as _us, w8_operands  # noqa: E402
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); each also with split-K at 1 and 2 waves
BASES = [(64, 128, 128, 4, 4), (64, 64, 128, 4, 4), (128, 128, 128, 8, 3), (128, 64, 128, 4, 4), (64, 256, 128, 8, 3)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="32,64,128,256")
    ap.add_argument("--shapes", default="qkv,o,gate_up,down")
    ap.add_argument("--formats", default="int8,fp8")
    ap.add_argument("--seconds", type=float, default=240)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    start = time.time()
    out = {"device": torch.cuda.get_device_name(), "results": []}
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for fmt in a.formats.split(","):
        dtype = torch.int8 if fmt == "int8" else torch.float8_e4m3fn
        vendor, ref_fn = (int8_gemm_int_mm, int8_gemm_ref) if fmt == "int8" else (fp8_gemm_scaled_mm, fp8_gemm_ref)
        for name in a.shapes.split(","):
            k, n, w, ws, wb, w_scale = w8_operands(name, dtype)
            for m in [int(r) for r in a.rows.split(",")]:
                if time.time() - start > a.seconds:
                    break
                x = (torch.randn(m, k, device="cuda") * 20).clamp(-127, 127)
                xq = x.round().to(torch.int8) if dtype == torch.int8 else x.to(dtype)
                x_scale = torch.rand(m, device="cuda") / 20 + 1e-3
                xb = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                ref = ref_fn(xq, x_scale, w, w_scale, torch.bfloat16).float()
                tol = 2e-2 * ref.abs().max().item()
                res = {"format": fmt, "shape": name, "k": k, "n": n, "rows": m, "copies": len(ws),
                       "bf16_cublas_us": _us(lambda i: F.linear(xb, wb[i]), len(wb)),
                       "default": list(default_config(m, dtype, n, k, sms))}
                y = vendor(xq, x_scale, w, w_scale, torch.bfloat16).float()
                if torch.allclose(y, ref, rtol=2e-2, atol=tol):
                    res["vendor_us"] = _us(lambda i: vendor(xq, x_scale, ws[i], w_scale, torch.bfloat16), len(ws))
                timed = []
                for base in BASES:
                    for waves in (0, 1, 2):
                        c = (*base, waves)
                        if time.time() - start > a.seconds:
                            break
                        try:
                            y = scaled_gemm_triton(xq, w, x_scale, w_scale, torch.bfloat16, config=c).float()
                            if not torch.allclose(y, ref, rtol=2e-2, atol=tol):
                                print("wrong", fmt, name, m, c, flush=True)
                                continue
                            t = _us(lambda i, c=c: scaled_gemm_triton(xq, ws[i], x_scale, w_scale, torch.bfloat16,
                                                                     config=c), len(ws))
                        except Exception as exc:  # noqa: BLE001 - a config this card cannot compile or run is skipped
                            print("skip", c, type(exc).__name__, str(exc)[:120], flush=True)
                            continue
                        timed.append((t, list(c)))
                timed.sort()
                res["top"] = timed[:6]
                res["default_us"] = next((t for t, c in timed if c == res["default"]), None)
                if timed:
                    best = timed[0][0]
                    res["best_over_bf16"] = res["bf16_cublas_us"] / best
                    res["vendor_over_bf16"] = res["bf16_cublas_us"] / res["vendor_us"] if "vendor_us" in res else None
                    d = res["default_us"]
                    res["default_over_bf16"] = res["bf16_cublas_us"] / d if d else None
                    res["best_weight_GBps"] = n * k / best / 1e3
                out["results"].append(res)
                print(json.dumps(res), flush=True)
                if a.json:
                    with open(a.json, "w") as f:
                        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
