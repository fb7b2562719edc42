"""Decode-size GEMMs (M = 1..64 rows): which kernel each quantized format should run at each row count.

INT4: the batch-1 GEMV variants (the int->float GEMV and the bit-trick "magic" GEMV over a few tile configs), the
tensor-core planes and tile kernels. FP8: per-token activation quant + the FP8 GEMM (W8A8, what the checkpoint
says) against FP8 weight-only (W8A16: activations stay bf16). Every case is checked against its torch reference,
then timed as a CUDA-graph replay against the copy bandwidth measured in the same run.

    PYTHONUNBUFFERED=1 python bench/decode_gemm.py [--out DIR] [--quick]
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_bench import guarded, import_kernels, measure, measure_ceilings, rel_err  # noqa: E402

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096))  # (K, N) of Llama-3.1-8B's o_proj, gate/up, down


def _row(label, m, kk, n, wbytes, hbm, base_us, fn, ref):
    err = rel_err(fn(), ref)
    us, eager = measure(fn)
    return [dict(kernel=label, m=m, k=kk, n=n, us=round(us, 2), eager_us=round(eager, 2),
                 pct_hbm=round(100 * wbytes / us / 1e3 / hbm, 1), speedup_vs_bf16=round(base_us / us, 2), err=err)]


def int4_rows(k, hbm, quick):
    from kvant.kernels.int4_pack import pack_int4

    rows = []
    for kk, n in SHAPES:
        g = 128
        packed = pack_int4(torch.randint(-8, 8, (n, kk), device="cuda", dtype=torch.int8))
        scale = (torch.rand(n, kk // g, device="cuda") * 0.01 + 1e-3).to(torch.bfloat16)
        wbf = torch.randn(n, kk, device="cuda", dtype=torch.bfloat16)
        wbytes = packed.numel() * 4 + scale.numel() * 2
        for m in (1, 2, 4, 8, 16):
            x = torch.randn(m, kk, device="cuda", dtype=torch.bfloat16)
            ref = k.w4.w4a16_gemm_ref(x, packed, scale, g)
            base_us, _ = measure(lambda: x @ wbf.t())
            cases = [("dispatch", lambda: k.w4.w4a16_gemm(x, packed, scale, g)),
                     ("tile", lambda: k.w4.w4a16_gemm_triton(x, packed, scale, g)),
                     ("planes", lambda: k.w4.w4a16_gemm_planes_triton(x, packed, scale, g,
                                                                      config=k.w4.PLANES_CONFIG))]
            if m == 1:
                for bn in ((16, 32) if quick else (8, 16, 32, 64)):
                    for bk in (256, 512, 1024):
                        for warps in (4,) if quick else (2, 4, 8):
                            for grouped in (True, False):
                                cfg = (bn, bk, warps, 3, 2, grouped)
                                cases.append((f"gemv {cfg}", lambda cfg=cfg: k.w4.w4a16_gemv_triton(
                                    x, packed, scale, g, config=cfg)))
            for label, fn in cases:
                rows += guarded(label, lambda label=label, fn=fn: _row(label, m, kk, n, wbytes, hbm, base_us, fn,
                                                                       ref))
            _print_best(rows, m, kk, n, base_us)
    return rows


def fp8_rows(k, hbm):
    rows = []
    for kk, n in SHAPES:
        w = (torch.randn(n, kk, device="cuda") * 0.05).to(torch.float8_e4m3fn)
        ws = torch.rand(n, 1, device="cuda") * 0.01 + 1e-3
        wbf = torch.randn(n, kk, device="cuda", dtype=torch.bfloat16)
        wbytes = w.numel() + ws.numel() * 4
        for m in (1, 2, 4, 8, 16, 32, 64):
            x = torch.randn(m, kk, device="cuda", dtype=torch.bfloat16)
            ref = k.w8.w8a16_gemm_ref(x, w, ws)
            base_us, _ = measure(lambda: x @ wbf.t())

            def w8a8():
                xq, xs = k.fp8.quant_fp8_per_token(x)
                return k.fp8.fp8_gemm(xq, xs, w, ws, x.dtype)

            for label, fn in (("fp8 w8a8 (quant + gemm)", w8a8),
                              ("fp8 w8a16", lambda: k.w8.w8a16_gemm_triton(x, w, ws))):
                rows += guarded(label, lambda label=label, fn=fn: _row(label, m, kk, n, wbytes, hbm, base_us, fn,
                                                                       ref))
            _print_best(rows, m, kk, n, base_us, family=lambda r: r["kernel"])
    return rows


def _print_best(rows, m, kk, n, base_us, family=lambda r: r["kernel"].split()[0]):
    best = {}
    for r in rows:
        if (r["m"], r["k"], r["n"]) == (m, kk, n):
            fam = family(r)
            if fam not in best or r["us"] < best[fam]["us"]:
                best[fam] = r
    print(f"M={m:2d} K={kk} N={n}: bf16 {base_us:6.1f} us | " + " | ".join(
        f"{f} {r['us']:.1f} us {r['pct_hbm']:.0f}% hbm x{r['speedup_vs_bf16']:.2f} [{r['kernel']}] err {r['err']:.1e}"
        for f, r in best.items()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=("int4", "fp8"))
    a = ap.parse_args()
    k = import_kernels()
    ceil = measure_ceilings()
    hbm = ceil["hbm_GBps"]
    print(f"device {torch.cuda.get_device_name()}, copy {hbm:.0f} GB/s", flush=True)
    out = dict(device=torch.cuda.get_device_name(), ceilings=ceil, rows=[])
    if a.only != "int4":
        out["rows"] += fp8_rows(k, hbm)
    if a.only != "fp8":
        out["rows"] += int4_rows(k, hbm, a.quick)
    if a.out:
        Path(a.out, "decode_gemm.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
