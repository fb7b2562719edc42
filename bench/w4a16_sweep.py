"""W4A16 at decode sizes: the Triton kernels (tensor-core tile, tensor-core planes, CUDA-core GEMV at one row) over a few
tile configs each, checked against the torch reference, timed as CUDA-graph replays against the copy bandwidth
measured in the same run. Picks the dispatch thresholds of kernels/w4a16_gemm.py.

    PYTHONUNBUFFERED=1 python bench/w4a16_sweep.py [--out DIR]
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_bench import guarded, import_kernels, measure, measure_ceilings, rel_err  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT"))
    a = ap.parse_args()
    from kvant.kernels.int4_pack import pack_int4

    k = import_kernels()
    ceil = measure_ceilings()
    hbm = ceil["hbm_GBps"]
    print(f"device {torch.cuda.get_device_name()}, copy {hbm:.0f} GB/s", flush=True)
    rows = []
    for kk, n in ((4096, 4096), (4096, 14336), (14336, 4096)):
        g = 128
        packed = pack_int4(torch.randint(-8, 8, (n, kk), device="cuda", dtype=torch.int8))
        scale = (torch.rand(n, kk // g, device="cuda") * 0.01 + 1e-3).to(torch.bfloat16)
        wbf = torch.randn(n, kk, device="cuda", dtype=torch.bfloat16)
        wbytes = packed.numel() * 4 + scale.numel() * 2
        for m in (1, 2, 4, 16, 64, 256, 2048):
            x = torch.randn(m, kk, device="cuda", dtype=torch.bfloat16)
            ref = k.w4.w4a16_gemm_ref(x, packed, scale, g)
            cases = [("tile default", lambda: k.w4.w4a16_gemm_triton(x, packed, scale, g)),
                     ("dispatch", lambda: k.w4.w4a16_gemm(x, packed, scale, g))]
            if m == 1:
                for bn in (16, 32, 64):
                    for bk in (256, 512, 1024):
                        for waves in (2, 4):
                            cfg = (bn, bk, 4, 3, waves, True)
                            cases.append((f"gemv {cfg}", lambda cfg=cfg: k.w4.w4a16_gemv_triton(x, packed, scale, g,
                                                                                                config=cfg)))
            if m >= 16:
                cases.append(("dequant+mm", lambda: k.w4.w4a16_dequant_mm_triton(x, packed, scale, g)))
            base_us, _ = measure(lambda: x @ wbf.t())
            for label, fn in cases:
                def case(label=label, fn=fn):
                    err = rel_err(fn(), ref)
                    us, eager = measure(fn)
                    return [dict(kernel=label, m=m, k=kk, n=n, us=round(us, 2), eager_us=round(eager, 2),
                                 gbps=round(wbytes / us / 1e3), pct_hbm=round(100 * wbytes / us / 1e3 / hbm, 1),
                                 speedup_vs_bf16=round(base_us / us, 2), err=err)]
                rows += guarded(label, case)
            best = {}
            for r in rows:
                if (r["m"], r["k"], r["n"]) == (m, kk, n):
                    fam = r["kernel"].split()[0]
                    if fam not in best or r["us"] < best[fam]["us"]:
                        best[fam] = r
            print(f"M={m:2d} K={kk} N={n}: bf16 {base_us:6.1f} us | " + " | ".join(
                f"{f} {r['us']:.1f} us {r['pct_hbm']:.0f}% hbm x{r['speedup_vs_bf16']:.2f} [{r['kernel']}] err {r['err']:.1e}"
                for f, r in best.items()), flush=True)
    if a.out:
        Path(a.out, "w4a16_sweep.json").write_text(json.dumps(dict(ceilings=ceil, rows=rows), indent=1))


if __name__ == "__main__":
    main()
