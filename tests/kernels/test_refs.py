"""The torch references against independent implementations (loops, transformers' Llama code) on tiny shapes."""
import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from kvant.kernels import (activation, fp8_gemm, int8_gemm, kv_store, paged_attention, rmsnorm, rope, w4a16_gemm,
                           w8a16_gemm)

from .naive import attend, pack_rows

FP8 = torch.float8_e4m3fn


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_transformers(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 24, generator=g).to(dtype)
    res = torch.randn(5, 24, generator=g).to(dtype)
    hf = LlamaRMSNorm(24, eps=1e-5).to(dtype)
    hf.weight.data = torch.rand(24, generator=g).to(dtype) + 0.5
    torch.testing.assert_close(rmsnorm.rms_norm_ref(x, hf.weight.data, 1e-5), hf(x), atol=0, rtol=0)
    out, summed = rmsnorm.rms_norm_ref(x, hf.weight.data, 1e-5, residual=res)
    torch.testing.assert_close(summed, x + res, atol=0, rtol=0)
    torch.testing.assert_close(out, hf(x + res), atol=0, rtol=0)


def test_rope_matches_transformers():
    g = torch.Generator().manual_seed(1)
    t, hq, hkv, d, max_pos = 6, 4, 2, 16, 32
    q, k = torch.randn(t, hq, d, generator=g), torch.randn(t, hkv, d, generator=g)
    positions = torch.tensor([0, 3, 7, 8, 30, 31])
    freqs = torch.arange(max_pos)[:, None].float() / (10000 ** (torch.arange(0, d, 2).float() / d))[None, :]
    cos_sin = torch.cat([freqs.cos(), freqs.sin()], dim=-1)
    emb = torch.cat([freqs, freqs], dim=-1)[positions]  # HF layout: [T, D] with the angles repeated
    hq_ref, hk_ref = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], emb.cos()[None],
                                          emb.sin()[None])
    q_out, k_out = rope.apply_rope_ref(q, k, positions, cos_sin)
    torch.testing.assert_close(q_out, hq_ref[0].transpose(0, 1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(k_out, hk_ref[0].transpose(0, 1), atol=1e-6, rtol=1e-6)


def test_silu_and_mul():
    x = torch.randn(3, 10, generator=torch.Generator().manual_seed(2))
    expected = torch.stack([torch.stack([F.silu(r[j]) * r[5 + j] for j in range(5)]) for r in x])
    torch.testing.assert_close(activation.silu_and_mul_ref(x), expected, atol=1e-6, rtol=1e-6)


def _fill_cache(num_blocks, bs, hkv, d, dtype, g):
    return torch.randn(num_blocks, bs, hkv, d, generator=g).to(dtype), torch.randn(num_blocks, bs, hkv, d,
                                                                                 generator=g).to(dtype)


@pytest.mark.parametrize("cache_dtype", [torch.float32, FP8])
def test_store_kvcache_writes_slots_and_skips_minus_one(cache_dtype):
    g = torch.Generator().manual_seed(3)
    k, v = torch.randn(4, 2, 8, generator=g), torch.randn(4, 2, 8, generator=g)
    kc, vc = torch.zeros(3, 4, 2, 8).to(cache_dtype), torch.zeros(3, 4, 2, 8).to(cache_dtype)
    slots = torch.tensor([5, -1, 0, 11])
    kv_store.store_kvcache_ref(k, v, kc, vc, slots, k_scale=0.5, v_scale=0.25)
    ks, vs = (0.5, 0.25) if cache_dtype == FP8 else (1.0, 1.0)
    for t, s in enumerate(slots.tolist()):
        if s < 0:
            continue
        torch.testing.assert_close(kc[s // 4, s % 4].float(), (k[t] / ks).to(cache_dtype).float(), atol=0, rtol=0)
        torch.testing.assert_close(vc[s // 4, s % 4].float(), (v[t] / vs).to(cache_dtype).float(), atol=0, rtol=0)
    written = {5, 0, 11}
    untouched = [s for s in range(12) if s not in written]
    assert all(kc[s // 4, s % 4].float().abs().sum() == 0 for s in untouched)


def _naive_paged(q, kc, vc, table, length, positions, scale, k_scale=1.0, v_scale=1.0):
    bs, out = kc.shape[1], torch.zeros(q.shape)
    group = q.shape[1] // kc.shape[2]
    for i, pos in enumerate(positions):
        for h in range(q.shape[1]):
            keys, values = [], []
            for j in range(min(pos + 1, length)):
                blk = int(table[j // bs])
                keys.append(kc[blk, j % bs, h // group].float() * k_scale)
                values.append(vc[blk, j % bs, h // group].float() * v_scale)
            out[i, h] = attend(q[i, h].float(), keys, values, scale)
    return out


@pytest.mark.parametrize("cache_dtype", [torch.float32, FP8])
def test_paged_decode_ref(cache_dtype):
    g = torch.Generator().manual_seed(4)
    bs, hq, hkv, d = 4, 4, 2, 8
    kc, vc = _fill_cache(6, bs, hkv, d, cache_dtype, g)
    q = torch.randn(2, hq, d, generator=g)
    tables = torch.tensor([[5, 2, 0], [1, 3, 4]], dtype=torch.int32)
    lens = torch.tensor([9, 3], dtype=torch.int32)
    ks, vs = (0.5, 2.0) if cache_dtype == FP8 else (None, None)
    out = paged_attention.paged_attention_decode_ref(q, kc, vc, tables, lens, 0.3, ks, vs)
    for b in range(2):
        L = int(lens[b])
        exp = _naive_paged(q[b:b + 1], kc, vc, tables[b], L, [L - 1], 0.3, ks or 1.0, vs or 1.0)
        torch.testing.assert_close(out[b:b + 1], exp, atol=1e-5, rtol=1e-5)


def test_paged_prefill_ref_with_cached_prefix():
    g = torch.Generator().manual_seed(5)
    bs, hq, hkv, d = 4, 6, 2, 8
    kc, vc = _fill_cache(8, bs, hkv, d, torch.float32, g)
    q_lens, ctx = [3, 5], [7, 5]  # sequence 0 has 4 cached tokens, sequence 1 none
    q = torch.randn(sum(q_lens), hq, d, generator=g)
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    tables = torch.tensor([[7, 1], [2, 6]], dtype=torch.int32)
    out = paged_attention.paged_attention_prefill_ref(q, kc, vc, cu, torch.tensor(ctx, dtype=torch.int32), tables,
                                                      0.35)
    for b in range(2):
        qs = q[cu[b]:cu[b + 1]]
        positions = list(range(ctx[b] - q_lens[b], ctx[b]))
        exp = _naive_paged(qs, kc, vc, tables[b], ctx[b], positions, 0.35)
        torch.testing.assert_close(out[cu[b]:cu[b + 1]], exp, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache_dtype", [torch.float32, FP8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_torch_paths_equal_the_refs(cache_dtype, seed):
    # the CPU engine's batched paths against the per-sequence references: mixed lengths (so several groups), cached
    # prefixes, GQA, fp8 cache with scales, and tables padded with -1
    g = torch.Generator().manual_seed(seed)
    bs, hq, hkv, d, nb = 4, 6, 2, 8, 40
    kc, vc = _fill_cache(nb, bs, hkv, d, cache_dtype, g)
    n = 9
    q_lens = torch.randint(1, 12, (n,), generator=g).tolist()
    q_lens[0] = 40  # one long sequence next to short ones
    ctx = [ql + int(torch.randint(0, 9, (1,), generator=g)) for ql in q_lens]
    if seed == 0:  # no cached prefixes at all: the unmasked causal path
        ctx = list(q_lens)
    width = max(-(-c // bs) for c in ctx) + 1
    tables = torch.full((n, width), -1, dtype=torch.int32)
    for b, c in enumerate(ctx):
        tables[b, :-(-c // bs)] = torch.randperm(nb, generator=g)[:-(-c // bs)].int()
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(sum(q_lens), hq, d, generator=g)
    lens = torch.tensor(ctx, dtype=torch.int32)
    ks, vs = (0.5, 2.0) if cache_dtype == FP8 else (None, None)
    assert len(paged_attention._length_groups(q_lens, ctx)) > 1
    torch.testing.assert_close(paged_attention.paged_attention_prefill_torch(q, kc, vc, cu, lens, tables, 0.3, ks, vs),
                               paged_attention.paged_attention_prefill_ref(q, kc, vc, cu, lens, tables, 0.3, ks, vs),
                               atol=1e-5, rtol=1e-5)
    qd = torch.randn(n, hq, d, generator=g)
    torch.testing.assert_close(paged_attention.paged_attention_decode_torch(qd, kc, vc, tables, lens, 0.3, ks, vs),
                               paged_attention.paged_attention_decode_ref(qd, kc, vc, tables, lens, 0.3, ks, vs),
                               atol=1e-5, rtol=1e-5)


def test_length_groups_cover_every_sequence_once():
    q_lens = [1, 50, 3, 3, 200, 1, 7]
    ctx = [90, 50, 3, 10, 200, 5, 7]
    groups = paged_attention._length_groups(q_lens, ctx)
    assert sorted(i for grp in groups for i in grp) == list(range(len(q_lens)))
    assert [4] in groups  # the 200-token sequence is not padded together with the short ones


def _naive_matmul(a, b_rows):
    return torch.tensor([[sum(float(a[i, kk]) * float(b_rows[j, kk]) for kk in range(a.shape[1]))
                          for j in range(b_rows.shape[0])] for i in range(a.shape[0])], dtype=torch.float64)


@pytest.mark.parametrize("asym", [False, True])
def test_w4a16_ref(asym):
    g = torch.Generator().manual_seed(6)
    n, k, gs = 16, 32, 16
    q = torch.randint(-8, 8, (n, k), generator=g)
    scale = torch.rand(n, k // gs, generator=g) + 0.1
    zp = torch.randint(-8, 8, (n, k // gs), generator=g) if asym else None
    x = torch.randn(3, k, generator=g)
    w = torch.zeros(n, k, dtype=torch.float64)
    for r in range(n):
        for c in range(k):
            z = int(zp[r, c // gs]) if asym else 0
            w[r, c] = (int(q[r, c]) - z) * float(scale[r, c // gs])
    packed_zp = pack_rows(zp.t().contiguous()).t().contiguous() if asym else None  # [N / 8, K / G]
    out = w4a16_gemm.w4a16_gemm_ref(x, pack_rows(q), scale, gs, packed_zp)
    torch.testing.assert_close(out.double(), _naive_matmul(x, w), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("wdtype", [torch.int8, FP8])
def test_w8a16_ref(wdtype):
    g = torch.Generator().manual_seed(7)
    w = torch.randint(-100, 100, (5, 12), generator=g).to(wdtype)
    s = torch.rand(5, 1, generator=g)
    x = torch.randn(2, 12, generator=g)
    exp = _naive_matmul(x, w.float()) * s.double().t()
    torch.testing.assert_close(w8a16_gemm.w8a16_gemm_ref(x, w, s).double(), exp, atol=1e-4, rtol=1e-4)


def test_quant_fp8_per_token_ref():
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(8)) * torch.tensor([[1.0], [10.0], [0.01], [0.0]])
    q, s = fp8_gemm.quant_fp8_per_token_ref(x)
    for i in range(4):
        amax = max(abs(float(v)) for v in x[i])
        assert s[i, 0].item() == pytest.approx(max(amax / 448.0, 1e-12), rel=1e-6)
        assert q[i].float().abs().max().item() <= 448.0
    torch.testing.assert_close(q.float() * s, x, atol=0, rtol=0.07)  # e4m3: 3 mantissa bits


def test_quant_int8_per_token_ref():
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(9))
    q, s = int8_gemm.quant_int8_per_token_ref(x)
    for i in range(3):
        amax = max(abs(float(v)) for v in x[i])
        assert s[i, 0].item() == pytest.approx(amax / 127.0, rel=1e-6)
        assert all(abs(float(x[i, j]) / s[i, 0].item() - int(q[i, j])) <= 0.5 + 1e-5 for j in range(7))


@pytest.mark.parametrize("name", ["fp8", "int8"])
def test_w8a8_gemm_ref(name):
    g = torch.Generator().manual_seed(10)
    x, w = torch.randn(3, 16, generator=g), torch.randn(5, 16, generator=g)
    bias = torch.randn(5, generator=g)
    mod = fp8_gemm if name == "fp8" else int8_gemm
    xq, xs = getattr(mod, f"quant_{name}_per_token_ref")(x)
    wq, ws = getattr(mod, f"quant_{name}_per_token_ref")(w)  # per-channel = per-row of W
    out = getattr(mod, f"{name}_gemm_ref")(xq, xs, wq, ws, torch.float32, bias)
    exp = _naive_matmul(xq.float(), wq.float()) * xs.double() * ws.double().t() + bias.double()
    torch.testing.assert_close(out.double(), exp, atol=1e-4, rtol=1e-5)
