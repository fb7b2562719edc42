"""Triton paged attention and KV-cache store (interpreter on CPU) against the torch references."""
import pytest
import torch

from kvant.kernels import kv_store, paged_attention, rope_store

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="interpreter tests pass CPU tensors; test_gpu.py covers the GPU")

FP8 = torch.float8_e4m3fn
TOL = {torch.bfloat16: dict(atol=2e-2, rtol=2e-2), torch.float16: dict(atol=2e-3, rtol=2e-3)}


def _paged_cache(num_blocks, bs, hkv, d, cache_dtype, g):
    k = torch.randn(num_blocks, bs, hkv, d, generator=g)
    v = torch.randn(num_blocks, bs, hkv, d, generator=g)
    if cache_dtype == FP8:  # values as a calibrated fp8 cache holds them: x / scale within the fp8 range
        return (k * 50).to(FP8), (v * 50).to(FP8), 0.02, 0.03
    return k.to(cache_dtype), v.to(cache_dtype), None, None


def _tables(lens, bs, num_blocks, g):
    width = max((n + bs - 1) // bs for n in lens) + 1  # one spare column: the kernel must not read past the length
    perm = torch.randperm(num_blocks, generator=g)[: len(lens) * width]
    return perm.reshape(len(lens), width).to(torch.int32)


@pytest.mark.parametrize("lens,hq,hkv,d,bs", [([1, 17, 300], 4, 2, 64, 16), ([130], 8, 8, 32, 32),
                                              ([700, 5], 6, 2, 16, 16)])
@pytest.mark.parametrize("dtype,cache", [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16),
                                         (torch.bfloat16, FP8)])
def test_decode(lens, hq, hkv, d, bs, dtype, cache):
    g = torch.Generator().manual_seed(sum(lens) + hq + d)
    num_blocks = len(lens) * (max(lens) // bs + 2)
    kc, vc, ks, vs = _paged_cache(num_blocks, bs, hkv, d, cache, g)
    tables = _tables(lens, bs, num_blocks, g)
    q = torch.randn(len(lens), hq, d, generator=g).to(dtype)
    ctx = torch.tensor(lens, dtype=torch.int32)
    args = (q, kc, vc, tables, ctx, d**-0.5, ks, vs)
    torch.testing.assert_close(paged_attention.paged_attention_decode_triton(*args),
                               paged_attention.paged_attention_decode_ref(*args), **TOL[dtype])


@pytest.mark.parametrize("q_lens,ctx_lens,hq,hkv,d,bs", [([5, 1, 70], [5, 40, 150], 4, 2, 32, 16),
                                                         ([130], [200], 2, 1, 64, 32)])
@pytest.mark.parametrize("dtype,cache", [(torch.bfloat16, torch.bfloat16), (torch.float16, FP8)])
def test_prefill_with_cached_prefix(q_lens, ctx_lens, hq, hkv, d, bs, dtype, cache):
    g = torch.Generator().manual_seed(sum(ctx_lens) + hq)
    num_blocks = len(ctx_lens) * (max(ctx_lens) // bs + 2)
    kc, vc, ks, vs = _paged_cache(num_blocks, bs, hkv, d, cache, g)
    tables = _tables(ctx_lens, bs, num_blocks, g)
    q = torch.randn(sum(q_lens), hq, d, generator=g).to(dtype)
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    args = (q, kc, vc, cu, torch.tensor(ctx_lens, dtype=torch.int32), tables, d**-0.5, ks, vs)
    torch.testing.assert_close(paged_attention.paged_attention_prefill_triton(*args),
                               paged_attention.paged_attention_prefill_ref(*args), **TOL[dtype])


def test_decode_rejects_non_power_of_two_head_dim():
    q = torch.randn(1, 2, 24)
    cache = torch.zeros(2, 4, 2, 24)
    with pytest.raises(ValueError, match="head_dim"):
        paged_attention.paged_attention_decode_triton(q, cache, cache, torch.zeros(1, 1, dtype=torch.int32),
                                                      torch.ones(1, dtype=torch.int32), 1.0)


@pytest.mark.parametrize("cache", [torch.bfloat16, FP8])
def test_store_kvcache(cache):
    g = torch.Generator().manual_seed(5)
    t, hkv, d = 9, 2, 32
    k = (torch.randn(t, hkv, d, generator=g) * 3).to(torch.bfloat16)
    v = (torch.randn(t, hkv, d, generator=g) * 3).to(torch.bfloat16)
    slots = torch.tensor([3, -1, 0, 17, 40, -1, 5, 63, 20], dtype=torch.int64)
    caches = [torch.zeros(4, 16, hkv, d).to(cache) for _ in range(4)]
    kv_store.store_kvcache_triton(k, v, caches[0], caches[1], slots, 0.01, 0.02)
    kv_store.store_kvcache_ref(k, v, caches[2], caches[3], slots, 0.01, 0.02)
    torch.testing.assert_close(caches[0].float(), caches[2].float(), atol=0, rtol=0)
    torch.testing.assert_close(caches[1].float(), caches[3].float(), atol=0, rtol=0)


def test_decode_call_after_call_with_changing_splits():
    # the split count follows the batch and the block table's width: calls in a row with different ones stay right
    g = torch.Generator().manual_seed(7)
    for lens, hkv in (([600, 300], 2), ([900], 1), ([600, 300], 2)):
        kc, vc, _, _ = _paged_cache(len(lens) * 60, 16, hkv, 32, torch.float16, g)
        tables = _tables(lens, 16, len(lens) * 60, g)
        q = torch.randn(len(lens), 2 * hkv, 32, generator=g).to(torch.float16)
        args = (q, kc, vc, tables, torch.tensor(lens, dtype=torch.int32), 32**-0.5, None, None)
        torch.testing.assert_close(paged_attention.paged_attention_decode_triton(*args),
                                   paged_attention.paged_attention_decode_ref(*args), **TOL[torch.float16])


def test_decode_short_contexts_in_a_wide_table():
    # a CUDA graph's block table is as wide as max_model_len: the split count follows that width, and each sequence's
    # own length is spread over the splits (200 tokens over 4 splits of 64, 3 tokens in the first split alone)
    g = torch.Generator().manual_seed(11)
    lens, bs, hkv = [200, 3], 16, 2
    kc, vc, _, _ = _paged_cache(140, bs, hkv, 32, torch.float16, g)
    tables = torch.randperm(140, generator=g)[:128].reshape(2, 64).to(torch.int32)  # 1024 tokens wide
    q = torch.randn(2, 4, 32, generator=g).to(torch.float16)
    args = (q, kc, vc, tables, torch.tensor(lens, dtype=torch.int32), 32**-0.5, None, None)
    torch.testing.assert_close(paged_attention.paged_attention_decode_triton(*args),
                               paged_attention.paged_attention_decode_ref(*args), **TOL[torch.float16])


def _rope_decode_case(lens, hq, hkv, d, bs, dtype, cache, qk_norm, width, g):
    # raw projections as views of one merged qkv output; the new token of sequence b sits at position lens[b] - 1
    b = len(lens)
    num_blocks = b * width + 2
    kc, vc, ks, vs = _paged_cache(num_blocks, bs, hkv, d, cache, g)
    tables = torch.randperm(num_blocks, generator=g)[: b * width].reshape(b, width).to(torch.int32)
    qkv = (torch.randn(b, (hq + 2 * hkv) * d, generator=g) * 2).to(dtype)
    q, k, v = (x.view(b, -1, d) for x in qkv.split([hq * d, hkv * d, hkv * d], dim=-1))
    pos = torch.tensor(lens, dtype=torch.int64) - 1
    slots = torch.stack([tables[i, (n - 1) // bs].long() * bs + (n - 1) % bs for i, n in enumerate(lens)])
    slots[-1] = -1 if b > 2 else slots[-1]  # a padded graph row: stores nothing
    freqs = torch.arange(1024.0)[:, None] * (1e4 ** (-torch.arange(0, d, 2) / d))[None, :]
    cos_sin = torch.cat([freqs.cos(), freqs.sin()], dim=-1)
    norm = dict(q_norm_weight=(torch.rand(d, generator=g) + 0.5).to(dtype),
                k_norm_weight=(torch.rand(d, generator=g) + 0.5).to(dtype), eps=1e-6) if qk_norm else {}
    head = (q, k, v, pos, cos_sin)
    tail = (slots, tables, torch.tensor(lens, dtype=torch.int32), d**-0.5, ks, vs)
    return head, (kc, vc), (kc.clone(), vc.clone()), tail, norm


@pytest.mark.parametrize("lens,hq,hkv,d,bs,width", [([1, 17, 300], 4, 2, 64, 16, 20), ([200, 3], 4, 2, 32, 16, 64),
                                                    ([130], 8, 8, 32, 32, 5)])
@pytest.mark.parametrize("dtype,cache,qk_norm", [(torch.bfloat16, torch.bfloat16, False),
                                                 (torch.float16, torch.float16, True),
                                                 (torch.bfloat16, FP8, False), (torch.float16, FP8, True)])
@pytest.mark.parametrize("merge3d", [False, True])
def test_rope_store_decode(lens, hq, hkv, d, bs, width, dtype, cache, qk_norm, merge3d, monkeypatch):
    # one launch: RoPE (and q/k norm), the new token's KV store and split-KV decode attention with its in-kernel merge
    # (either form), against rope_store_kv_ref + paged_attention_decode_ref; wide tables give several splits per
    # sequence
    monkeypatch.setattr(paged_attention, "MERGE3D", merge3d)
    g = torch.Generator().manual_seed(sum(lens) + hq + d + width)
    head, caches, ref_caches, tail, norm = _rope_decode_case(lens, hq, hkv, d, bs, dtype, cache, qk_norm, width, g)
    slots, rest = tail[0], tail[1:]
    got = paged_attention.rope_store_decode_triton(*head, *caches, slots, *rest, **norm)
    want = paged_attention.rope_store_decode_ref(*head, *ref_caches, slots, *rest, **norm)
    tol = dict(atol=5e-2, rtol=5e-2) if dtype == torch.bfloat16 or qk_norm else TOL[dtype]
    if cache == FP8:
        # the interpreter truncates where the GPU rounds, so a stored e4m3 k may sit a step off the reference's (checked
        # below); the attention itself is checked over the cache the kernel wrote
        q_rot = rope_store.rope_store_kv_ref(*head, *[c.clone() for c in caches], slots, *rest[-2:], **norm)
        want = paged_attention.paged_attention_decode_ref(q_rot, *caches, *rest)
    torch.testing.assert_close(got, want, **tol)
    for a, w in zip(caches, ref_caches):  # only the new tokens' slots were written, with the reference's values
        if cache == FP8:
            torch.testing.assert_close(a.float(), w.float(), atol=1 / 16, rtol=0.26)  # two e4m3 steps
        else:
            torch.testing.assert_close(a, w, **tol)
    counters = paged_attention.splitk_buffers(torch.device("cpu"), 1, 1, 1)[1]
    assert int(counters.abs().sum()) == 0  # every merge reset its counter for the next call


def test_rope_store_decode_rejects_mismatched_rows():
    g = torch.Generator().manual_seed(3)
    head, caches, _, tail, _ = _rope_decode_case([5, 9], 4, 2, 32, 16, torch.float16, torch.float16, False, 4, g)
    q, k, v, pos, cs = head
    with pytest.raises(ValueError, match="one query per sequence"):
        paged_attention.rope_store_decode_triton(q[:1], k, v, pos, cs, *caches, *tail)
