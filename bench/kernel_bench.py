"""Check every kvant kernel against its torch reference on fresh random inputs, then time it against measured ceilings.

    PYTHONUNBUFFERED=1 python bench/kernel_bench.py [--out DIR] [--quick]

Needs a CUDA GPU. Prints one table (kernel, shape, time, achieved rate, % of ceiling, max error vs reference) and
writes kernels.json to --out (default: $OUT when set).
"""
import argparse
import importlib.util
import json
import os
import sys
import time
import types
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

REPO = Path(__file__).resolve().parents[1]
FP8 = torch.float8_e4m3fn


def import_kernels():
    try:
        import kvant.kernels  # noqa: F401
    except ModuleNotFoundError:
        # a bare checkout (no `pip install -e .`, e.g. on the GPU machine): map kvant.kernels onto ./kernels
        sys.modules.setdefault("kvant", types.ModuleType("kvant")).__path__ = []
        spec = importlib.util.spec_from_file_location("kvant.kernels", REPO / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(REPO / "kernels")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["kvant.kernels"] = module
        spec.loader.exec_module(module)
    from kvant.kernels import (activation, fp8_gemm, int8_gemm, kv_store, paged_attention, rmsnorm, rope,
                               w4a16_gemm, w8a16_gemm)
    return types.SimpleNamespace(activation=activation, fp8=fp8_gemm, int8=int8_gemm, kv_store=kv_store,
                                 attn=paged_attention, rmsnorm=rmsnorm, rope=rope, w4=w4a16_gemm, w8=w8a16_gemm)


@dataclass
class Row:
    kernel: str
    shape: str
    us: float
    rate: float  # GB/s or TFLOP/s (TOP/s for int8)
    unit: str
    ceiling: str
    pct: float
    err: float | None  # max |out - ref| / max |ref|
    eager_us: float  # the same call timed without a CUDA graph: adds the host-side launch cost


def measure(fn, graph: bool = True) -> tuple[float, float]:
    """(GPU time of fn replayed in a CUDA graph, as the engine's decode runs it; eager time), both medians in us."""
    eager = bench_us(fn)
    if not graph:
        return eager, eager
    return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median") * 1e3, eager


def bench_us(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3


def guarded(label: str, fn) -> list:
    """fn() -> list of rows; a failure is printed and the bench goes on with the next case."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one broken case must not hide the others' numbers
        print(f"FAILED {label}: {type(e).__name__}: {e}", flush=True)
        return []


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    return ((out - ref).abs().max() / ref.abs().max().clamp(min=1e-30)).item()


# ---- ceilings ----
def measure_ceilings() -> dict:
    n = 1 << 30  # 1 GiB each way
    src, dst = torch.empty(n, dtype=torch.uint8, device="cuda"), torch.empty(n, dtype=torch.uint8, device="cuda")
    copy_us = bench_us(lambda: dst.copy_(src))
    del src, dst
    m = 8192
    a, b = torch.randn(m, m, device="cuda", dtype=torch.bfloat16), torch.randn(m, m, device="cuda",
                                                                              dtype=torch.bfloat16)
    bf16_us = bench_us(lambda: a @ b)
    a8, b8 = a.to(FP8), b.to(FP8).t()  # b8 column-major, as _scaled_mm wants
    one = torch.ones((), device="cuda")
    ai = torch.randint(-128, 127, (m, m), device="cuda", dtype=torch.int8)
    bi = torch.randint(-128, 127, (m, m), device="cuda", dtype=torch.int8).t()
    flops = 2 * m**3
    ceil = {"hbm_GBps": 2 * n / copy_us / 1e3, "bf16_TFLOPs": flops / bf16_us / 1e6,
            "fp8_TFLOPs": float("nan"), "int8_TOPs": float("nan")}
    fp8 = lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)  # noqa: E731
    guarded("fp8 ceiling", lambda: ceil.update(fp8_TFLOPs=flops / bench_us(fp8) / 1e6) or [])
    guarded("int8 ceiling", lambda: ceil.update(int8_TOPs=flops / bench_us(lambda: torch._int_mm(ai, bi)) / 1e6)
            or [])
    return ceil


# ---- benches ----
def gemm_rows(k, ceil, quick):
    from kvant.kernels.int4_pack import pack_int4

    rows = []
    shapes = [(4096, 4096), (4096, 14336)]
    # W4A16 and W8A16 (weight-only) at decode sizes: bytes are the weight stream
    for kk, n in shapes:
        w = torch.randn(n, kk, device="cuda") * 0.02
        q = torch.randint(-8, 8, (n, kk), device="cuda", dtype=torch.int8)
        packed, g = pack_int4(q), 128
        scale = (torch.rand(n, kk // g, device="cuda") * 0.01 + 1e-3).to(torch.bfloat16)
        w8 = (w * 4000).clamp(-448, 448).to(FP8)
        w8s = torch.full((n, 1), 1 / 4000, device="cuda")
        wbf = w.to(torch.bfloat16)
        for m in (1, 4, 16):
            x = torch.randn(m, kk, device="cuda", dtype=torch.bfloat16)
            shape = f"M={m} K={kk} N={n}"
            act = 2 * m * (kk + n)
            out = k.w4.w4a16_gemm_triton(x, packed, scale, g)
            err = rel_err(out, k.w4.w4a16_gemm_ref(x, packed, scale, g))
            us, eager = measure(lambda: k.w4.w4a16_gemm_triton(x, packed, scale, g))
            gbs = (packed.numel() * 4 + scale.numel() * 2 + act) / us / 1e3
            rows.append(Row("w4a16 g128", shape, us, gbs, "GB/s", "hbm", 100 * gbs / ceil["hbm_GBps"], err, eager))
            us, eager = measure(lambda: x @ wbf.t())
            gbs = (wbf.numel() * 2 + act) / us / 1e3
            rows.append(Row("bf16 matmul (baseline)", shape, us, gbs, "GB/s", "hbm", 100 * gbs / ceil["hbm_GBps"],
                            None, eager))
            if m in (1, 16):
                out = k.w8.w8a16_gemm_triton(x, w8, w8s)
                err = rel_err(out, k.w8.w8a16_gemm_ref(x, w8, w8s))
                us, eager = measure(lambda: k.w8.w8a16_gemm_triton(x, w8, w8s))
                gbs = (w8.numel() + act) / us / 1e3
                rows.append(Row("w8a16 fp8", shape, us, gbs, "GB/s", "hbm", 100 * gbs / ceil["hbm_GBps"], err, eager))
    # W8A8 at prefill sizes: FLOP bound
    for kk, n in shapes:
        w = torch.randn(n, kk, device="cuda")
        for m in ((2048,) if quick else (2048, 4096)):
            x = torch.randn(m, kk, device="cuda", dtype=torch.bfloat16)
            shape, flops = f"M={m} K={kk} N={n}", 2 * m * n * kk
            xq, xs = k.fp8.quant_fp8_per_token_triton(x)
            wq, ws = k.fp8.quant_fp8_per_token_ref(w)
            ref = k.fp8.fp8_gemm_ref(xq, xs, wq, ws, torch.bfloat16)
            for name, fn in (("fp8 w8a8 triton", k.fp8.fp8_gemm_triton), ("fp8 w8a8 _scaled_mm",
                                                                          k.fp8.fp8_gemm_scaled_mm)):
                def case(fn=fn, name=name):
                    err = rel_err(fn(xq, xs, wq, ws, torch.bfloat16), ref)
                    us, eager = measure(lambda: fn(xq, xs, wq, ws, torch.bfloat16))
                    tf = flops / us / 1e6
                    return [Row(name, shape, us, tf, "TFLOP/s", "fp8 _scaled_mm", 100 * tf / ceil["fp8_TFLOPs"], err, eager)]
                rows += guarded(f"{name} {shape}", case)
            xq_ref, _ = k.fp8.quant_fp8_per_token_ref(x)
            us, eager = measure(lambda: k.fp8.quant_fp8_per_token_triton(x))
            gbs = (x.numel() * 3 + m * 4) / us / 1e3
            mismatch = (xq.float() != xq_ref.float()).float().mean().item()
            rows.append(Row("quant fp8 per-token", f"M={m} K={kk}", us, gbs, "GB/s", "hbm",
                            100 * gbs / ceil["hbm_GBps"], mismatch, eager))
            xq, xs = k.int8.quant_int8_per_token_triton(x)
            wq, ws = k.int8.quant_int8_per_token_ref(w)
            ref = k.int8.int8_gemm_ref(xq, xs, wq, ws, torch.bfloat16) if m * n <= 2048 * 14336 else None
            for name, fn in (("int8 w8a8 triton", k.int8.int8_gemm_triton), ("int8 w8a8 _int_mm+epilogue",
                                                                            k.int8.int8_gemm_int_mm)):
                def case(fn=fn, name=name):
                    out = fn(xq, xs, wq, ws, torch.bfloat16)
                    err = rel_err(out, ref) if ref is not None else None
                    us, eager = measure(lambda: fn(xq, xs, wq, ws, torch.bfloat16))
                    tf = flops / us / 1e6
                    return [Row(name, shape, us, tf, "TOP/s", "int8 _int_mm", 100 * tf / ceil["int8_TOPs"], err, eager)]
                rows += guarded(f"{name} {shape}", case)
            if m == 4096 and n == 14336 and not quick:
                for cfg in ((128, 256, 128, 8, 3), (128, 128, 128, 4, 4), (128, 256, 64, 8, 4), (256, 128, 128, 8, 3)):
                    for name, quant in (("fp8", k.fp8.quant_fp8_per_token_ref), ("int8", k.int8.quant_int8_per_token_ref)):
                        def case(cfg=cfg, name=name, quant=quant):
                            from kvant.kernels.scaled_gemm import scaled_gemm_triton
                            aq, a_s = quant(x)
                            bq, b_s = quant(w)
                            fn = lambda: scaled_gemm_triton(aq, bq, a_s.view(-1), b_s.view(-1), torch.bfloat16,  # noqa: E731
                                                            config=cfg)
                            us, eager = measure(fn)
                            tf = flops / us / 1e6
                            c = ceil["fp8_TFLOPs"] if name == "fp8" else ceil["int8_TOPs"]
                            return [Row(f"  sweep {name} triton {cfg}", shape, us, tf, "TFLOP/s", "own matmul",
                                        100 * tf / c, None, eager)]
                        rows += guarded(f"sweep {name} {cfg}", case)
            xb = x
            wbf = w.to(torch.bfloat16)
            us, eager = measure(lambda: xb @ wbf.t())
            tf = flops / us / 1e6
            rows.append(Row("bf16 matmul (baseline)", shape, us, tf, "TFLOP/s", "bf16 matmul",
                            100 * tf / ceil["bf16_TFLOPs"], None, eager))
    return rows


def paged_setup(b, ctx, hkv, d, bs, cache_dtype):
    blocks_per_seq = triton.cdiv(ctx, bs)
    num_blocks = b * blocks_per_seq
    kc = torch.randn(num_blocks, bs, hkv, d, device="cuda", dtype=torch.bfloat16)
    vc = torch.randn(num_blocks, bs, hkv, d, device="cuda", dtype=torch.bfloat16)
    scales = (None, None)
    if cache_dtype == FP8:
        kc, vc, scales = (kc * 50).to(FP8), (vc * 50).to(FP8), (0.02, 0.02)
    tables = torch.randperm(num_blocks, device="cuda").to(torch.int32).reshape(b, blocks_per_seq)
    return kc, vc, tables, scales


def attention_rows(k, ceil, quick):
    rows = []
    hq, hkv, d, bs = 32, 8, 128, 16  # Llama-3.1-8B heads; the engine's block size
    for cache_dtype in (torch.bfloat16, FP8):
        for b in (1, 16, 64):
            for ctx in (1024, 4096, 16384):
                if quick and (b, ctx) not in ((1, 4096), (64, 4096)):
                    continue
                kc, vc, tables, (ks, vs) = paged_setup(b, ctx, hkv, d, bs, cache_dtype)
                q = torch.randn(b, hq, d, device="cuda", dtype=torch.bfloat16)
                lens = torch.full((b,), ctx, device="cuda", dtype=torch.int32)
                args = (q, kc, vc, tables, lens, d**-0.5, ks, vs)
                out = k.attn.paged_attention_decode_triton(*args)
                err = rel_err(out, k.attn.paged_attention_decode_ref(*args)) if b * ctx <= 16 * 16384 else None
                us, eager = measure(lambda: k.attn.paged_attention_decode_triton(*args))
                gbs = (2 * b * ctx * hkv * d * kc.element_size()) / us / 1e3
                name = "decode attn " + ("fp8 kv" if cache_dtype == FP8 else "bf16 kv")
                rows.append(Row(name, f"B={b} ctx={ctx}", us, gbs, "GB/s", "hbm", 100 * gbs / ceil["hbm_GBps"], err, eager))
                del kc, vc
    # prefill: (sequences, new tokens each, cached prefix each)
    for num_seqs, q_len, prefix in ((1, 4096, 0), (4, 1024, 3072), (16, 512, 0)):
        ctx = q_len + prefix
        kc, vc, tables, _ = paged_setup(num_seqs, ctx, hkv, d, bs, torch.bfloat16)
        q = torch.randn(num_seqs * q_len, hq, d, device="cuda", dtype=torch.bfloat16)
        cu = torch.arange(0, num_seqs + 1, device="cuda", dtype=torch.int32) * q_len
        lens = torch.full((num_seqs,), ctx, device="cuda", dtype=torch.int32)
        args = (q, kc, vc, cu, lens, tables, d**-0.5)
        out = k.attn.paged_attention_prefill_triton(*args)
        err = rel_err(out, k.attn.paged_attention_prefill_ref(*args))
        us, eager = measure(lambda: k.attn.paged_attention_prefill_triton(*args), graph=False)
        keys_seen = num_seqs * sum(prefix + i + 1 for i in range(q_len))  # causal
        tf = 4 * hq * d * keys_seen / us / 1e6
        rows.append(Row("prefill attn bf16 kv", f"seqs={num_seqs} q={q_len} prefix={prefix}", us, tf, "TFLOP/s",
                        "bf16 matmul", 100 * tf / ceil["bf16_TFLOPs"], err, eager))
    return rows


def small_rows(k, ceil):
    rows = []
    t, h, hq, hkv, d, inter = 4096, 4096, 32, 8, 128, 14336
    bf = dict(device="cuda", dtype=torch.bfloat16)

    def add(name, shape, fn, ref_fn, nbytes):
        err = rel_err(fn(), ref_fn())
        us, eager = measure(fn)
        gbs = nbytes / us / 1e3
        rows.append(Row(name, shape, us, gbs, "GB/s", "hbm", 100 * gbs / ceil["hbm_GBps"], err, eager))

    x, r, w = torch.randn(t, h, **bf), torch.randn(t, h, **bf), torch.rand(h, **bf) + 0.5
    add("rms_norm", f"T={t} H={h}", lambda: k.rmsnorm.rms_norm_triton(x, w, 1e-5),
        lambda: k.rmsnorm.rms_norm_ref(x, w, 1e-5), 4 * t * h)
    add("rms_norm + residual", f"T={t} H={h}", lambda: k.rmsnorm.rms_norm_triton(x, w, 1e-5, r)[0],
        lambda: k.rmsnorm.rms_norm_ref(x, w, 1e-5, r)[0], 8 * t * h)
    q, kk = torch.randn(t, hq, d, **bf), torch.randn(t, hkv, d, **bf)
    freqs = torch.arange(8192, device="cuda")[:, None].float() / 500000 ** (torch.arange(0, d, 2, device="cuda") / d)
    cos_sin = torch.cat([freqs.cos(), freqs.sin()], dim=-1)
    pos = torch.randint(0, 8192, (t,), device="cuda")
    add("rope", f"T={t} Hq={hq} Hkv={hkv} D={d}", lambda: k.rope.apply_rope_triton(q, kk, pos, cos_sin)[0],
        lambda: k.rope.apply_rope_ref(q, kk, pos, cos_sin)[0], 4 * t * (hq + hkv) * d)
    gu = torch.randn(t, 2 * inter, **bf)
    add("silu_and_mul", f"T={t} I={inter}", lambda: k.activation.silu_and_mul_triton(gu),
        lambda: k.activation.silu_and_mul_ref(gu), 6 * t * inter)
    kv_k, kv_v = torch.randn(t, hkv, d, **bf), torch.randn(t, hkv, d, **bf)
    slots = torch.randperm(t * 4, device="cuda")[:t]
    for cache_dtype, scale in ((torch.bfloat16, None), (FP8, 0.02)):
        caches = [torch.zeros(t * 4 // 16, 16, hkv, d, device="cuda", dtype=cache_dtype) for _ in range(4)]

        def run():
            k.kv_store.store_kvcache_triton(kv_k, kv_v, caches[0], caches[1], slots, scale, scale)
            return caches[0]

        def ref():
            k.kv_store.store_kvcache_ref(kv_k, kv_v, caches[2], caches[3], slots, scale, scale)
            return caches[2]

        nbytes = 2 * t * hkv * d * (2 + caches[0].element_size())
        add(f"store_kvcache {'fp8' if cache_dtype == FP8 else 'bf16'}", f"T={t} Hkv={hkv} D={d}", run, ref, nbytes)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for kernels.json")
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: bench/kernel_bench.py needs a CUDA GPU", file=sys.stderr)
        return 2
    k = import_kernels()
    torch.manual_seed(0)
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    t0 = time.time()
    ceil = measure_ceilings()
    print("ceilings: " + ", ".join(f"{key} {val:.0f}" for key, val in ceil.items()), flush=True)
    rows = []
    for label, section in (("small", lambda: small_rows(k, ceil)), ("gemm", lambda: gemm_rows(k, ceil, args.quick)),
                           ("attention", lambda: attention_rows(k, ceil, args.quick))):
        new = guarded(label, section)
        for r in new:
            err = "-" if r.err is None else f"{r.err:.1e}"
            print(f"{r.kernel:30s} {r.shape:34s} {r.us:9.1f} us {r.rate:8.1f} {r.unit:7s} {r.pct:5.1f}% of "
                  f"{r.ceiling:15s} err {err:8s} eager {r.eager_us:8.1f} us", flush=True)
        rows += new
        torch.cuda.empty_cache()
    print(f"total {time.time() - t0:.0f} s")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "kernels.json").write_text(json.dumps(
            {"device": dev, "torch": torch.__version__, "triton": triton.__version__, "ceilings": ceil,
             "rows": [asdict(r) for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
