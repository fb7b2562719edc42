"""Decode attention per layer on the GPU, Llama-3.1-8B's heads: the fused launch (RoPE + KV store + attention + split
merge, kvant.kernels.paged_attention.rope_store_decode_triton) against the same work as separate launches, and the
fused kernel's split knobs (MAX_SPLITS, MERGE3D).

Each case builds `--layers` distinct KV caches (one per layer, as the engine's graph sees them), checks every variant
against rope_store_decode_ref on fresh inputs, then times one CUDA graph that runs the variant once per layer:
µs per layer = median replay time / layers. Run it from another tree's gpu_env.sh with --label to time that tree's
kernels (a tree without rope_store_decode times RoPE + KV store followed by decode attention only).

    python -P bench/decode_attn_sweep.py --batches 1,8,64 --ctx 192,1024,4096 --json out.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

import kvant.kernels.paged_attention as pa
from kvant.kernels.rope_store import rope_store_kv_triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from w4a16_table import graph_us  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: TRITON_INTERPRET=1 and --check-only, at small shapes


def _inputs(b, ctx, layers, hq, hkv, d, bs, width, gen):
    blocks_per_seq = -(-ctx // bs)
    num_blocks = b * blocks_per_seq + 1
    caches = [(torch.randn(num_blocks, bs, hkv, d, generator=gen, device=DEV).to(torch.bfloat16),
               torch.randn(num_blocks, bs, hkv, d, generator=gen, device=DEV).to(torch.bfloat16))
              for _ in range(layers)]
    perm = torch.randperm(num_blocks - 1, generator=gen, device=DEV)[:b * blocks_per_seq].view(b, blocks_per_seq)
    tables = torch.zeros(b, width // bs, dtype=torch.int32, device=DEV)
    tables[:, :blocks_per_seq] = perm.int()
    lens = torch.full((b,), ctx, dtype=torch.int32, device=DEV)
    pos = (lens - 1).long()
    slots = (tables.long().gather(1, (pos // bs)[:, None])[:, 0] * bs + pos % bs)
    qkv = torch.randn(b, (hq + 2 * hkv) * d, generator=gen, device=DEV).to(torch.bfloat16)
    q = qkv[:, :hq * d].view(b, hq, d)
    k = qkv[:, hq * d:(hq + hkv) * d].view(b, hkv, d)
    v = qkv[:, (hq + hkv) * d:].view(b, hkv, d)
    inv = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device=DEV).float() / d))
    ang = torch.arange(width, device=DEV).float()[:, None] * inv[None, :]
    cos_sin = torch.cat([ang.cos(), ang.sin()], dim=1).contiguous()
    return caches, tables, lens, pos, slots, q, k, v, cos_sin


def _variants(label):
    out = {}
    if hasattr(pa, "rope_store_decode_triton"):
        def fused(q, k, v, pos, cs, kc, vc, slots, tables, lens, scale):
            return pa.rope_store_decode_triton(q, k, v, pos, cs, kc, vc, slots, tables, lens, scale)
        out["fused"] = fused

    def pair(q, k, v, pos, cs, kc, vc, slots, tables, lens, scale):
        qr = rope_store_kv_triton(q, k, v, pos, cs, kc, vc, slots)
        return pa.paged_attention_decode_triton(qr, kc, vc, tables, lens, scale)
    out["rope_store+attention"] = pair
    return {f"{label}:{name}": fn for name, fn in out.items()}


def _knobs(args):
    if not hasattr(pa, "MAX_SPLITS"):
        return [{}]
    return [{"MAX_SPLITS": s, "MERGE3D": m} for s in args.max_splits for m in (False, True)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--ctx", default="192,1024,4096")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--width", type=int, default=131072, help="block-table width in tokens (max_model_len)")
    ap.add_argument("--max-splits", default="64,16,8", help="MAX_SPLITS values to try on the fused kernel")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--label", default="main")
    ap.add_argument("--json", default=None)
    ap.add_argument("--check-only", action="store_true", help="the correctness checks only (no timing)")
    args = ap.parse_args()
    args.max_splits = [int(x) for x in args.max_splits.split(",")]
    hq, hkv, d, bs = 32, 8, 128, 16
    scale = d ** -0.5
    gen = torch.Generator(device=DEV).manual_seed(0)
    rows = []
    for b in [int(x) for x in args.batches.split(",")]:
        for ctx in [int(x) for x in args.ctx.split(",")]:
            caches, tables, lens, pos, slots, q, k, v, cs = _inputs(b, ctx, args.layers, hq, hkv, d, bs, args.width,
                                                                     gen)
            kc0, vc0 = caches[0][0].clone(), caches[0][1].clone()
            ref = pa.rope_store_decode_ref(q, k, v, pos, cs, kc0, vc0, slots, tables, lens, scale) \
                if hasattr(pa, "rope_store_decode_ref") else None
            for knobs in _knobs(args):
                for key, val in knobs.items():
                    setattr(pa, key, val)
                for name, fn in _variants(args.label).items():
                    if ref is not None:  # correctness on fresh copies of layer 0's cache before any timing
                        kc, vc = caches[0][0].clone(), caches[0][1].clone()
                        got = fn(q, k, v, pos, cs, kc, vc, slots, tables, lens, scale)
                        err = (got.float() - ref.float()).abs().max().item()
                        assert err < 3e-2, f"{name} {knobs} b{b} ctx{ctx}: max error {err}"
                        kv_err = max((kc.float() - kc0.float()).abs().max().item(), (vc.float() - vc0.float()).abs().max().item())
                        assert kv_err < 3e-2, f"{name} {knobs}: KV store differs by {kv_err}"

                    def run(fn=fn):
                        for kc, vc in caches:
                            fn(q, k, v, pos, cs, kc, vc, slots, tables, lens, scale)
                    if args.check_only:
                        continue
                    us = graph_us([run], args.reps) / args.layers
                    row = dict(label=args.label, variant=name, batch=b, ctx=ctx, us_per_layer=round(us, 2), **knobs)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            del caches
            if DEV == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name() if DEV == "cuda" else DEV, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
