"""Triton paged attention and KV-cache store (interpreter on CPU) against the torch references."""
import pytest
import torch

from kvant.kernels import kv_store, paged_attention

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
