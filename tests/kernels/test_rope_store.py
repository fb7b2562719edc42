"""Fused (q/k norm +) RoPE + KV-cache store against the unfused torch references, on views of a merged qkv output."""
import pytest
import torch

from kvant.kernels import rope_store
from kvant.kernels.kv_store import FP8

TOL = {torch.bfloat16: dict(atol=1e-2, rtol=1.6e-2), torch.float16: dict(atol=1e-3, rtol=1e-3)}


def _case(t, hq, hkv, d, dtype, cache_dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    qkv = (torch.randn(t, (hq + 2 * hkv) * d, generator=g) * 2).to(dtype).to(device)
    q, k, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)  # strided views, as SelfAttention passes them
    q, k, v = q.view(t, hq, d), k.view(t, hkv, d), v.view(t, hkv, d)
    pos = torch.randint(0, 64, (t,), generator=g).to(device)
    freqs = torch.arange(64.0)[:, None] * (1e4 ** (-torch.arange(0, d, 2) / d))[None, :]
    cos_sin = torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(device)
    num_blocks, block_size = 4, 16
    slots = torch.randperm(num_blocks * block_size, generator=g)[:t]
    slots[::3] = -1  # padded rows store nothing
    caches = [torch.zeros(num_blocks, block_size, hkv, d).to(cache_dtype).to(device) for _ in range(4)]
    w = [(torch.rand(d, generator=g) + 0.5).to(dtype).to(device) for _ in range(2)]
    return q, k, v, pos.to(device), cos_sin, caches, slots.to(device), w


def _check(fused, t, hq, hkv, d, dtype, cache_dtype, qk_norm, device):
    q, k, v, pos, cs, caches, slots, w = _case(t, hq, hkv, d, dtype, cache_dtype, device, seed=t * 31 + hq)
    norm = dict(q_norm_weight=w[0], k_norm_weight=w[1], eps=1e-6) if qk_norm else {}
    scales = (0.05, 0.02) if cache_dtype == FP8 else (None, None)
    q_out = fused(q, k, v, pos, cs, caches[0], caches[1], slots, *scales, **norm)
    q_ref = rope_store.rope_store_kv_ref(q, k, v, pos, cs, caches[2], caches[3], slots, *scales, **norm)
    # bf16 with q/k norm rounds three times before the rotation (normalised, times weight, rotated), each a
    # truncation under the interpreter: a few elements land up to 3 bf16 steps (of values near 2) apart
    tol = dict(atol=5e-2, rtol=1.6e-2) if qk_norm and dtype == torch.bfloat16 else TOL[dtype]
    torch.testing.assert_close(q_out, q_ref, **tol)
    if cache_dtype == FP8:
        # two e4m3 steps apart at most: k is rounded to the model dtype before it is quantized, and the interpreter
        # truncates that rounding
        for a, b in ((caches[0], caches[2]), (caches[1], caches[3])):
            torch.testing.assert_close(a.float(), b.float(), atol=1 / 16, rtol=0.26)  # two e4m3 steps
    else:
        torch.testing.assert_close(caches[0], caches[2], **tol)
        torch.testing.assert_close(caches[1], caches[3], atol=0, rtol=0)  # v is copied as is
    # skipped slots stayed empty; stored ones hold data
    used = torch.zeros(caches[0].shape[0] * caches[0].shape[1], dtype=torch.bool, device=device)
    used[slots[slots >= 0]] = True
    flat = caches[0].float().flatten(0, 1).abs().sum(dim=(1, 2))
    assert (flat[~used] == 0).all() and (flat[used] > 0).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests pass CPU tensors; the gpu test covers CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("t,hq,hkv,d", [(5, 9, 3, 64), (1, 4, 4, 128), (7, 6, 2, 32)])
@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("fp8_cache", [False, True])
def test_rope_store_kv_interpreter(dtype, t, hq, hkv, d, qk_norm, fp8_cache):
    cache_dtype = FP8 if fp8_cache else dtype
    _check(rope_store.rope_store_kv_triton, t, hq, hkv, d, dtype, cache_dtype, qk_norm, "cpu")


def test_rope_store_kv_refuses_bad_head_dim():
    q = torch.zeros(1, 2, 96)
    with pytest.raises(ValueError, match="head_dim"):
        rope_store.rope_store_kv_triton(q, q, q, torch.zeros(1, dtype=torch.int64), torch.zeros(4, 96), q, q,
                                        torch.zeros(1, dtype=torch.int64))


@pytest.mark.gpu
@pytest.mark.parametrize("fp8_cache", [False, True])
@pytest.mark.parametrize("hq,hkv,d,qk_norm", [(32, 8, 128, False), (16, 8, 128, True)])  # Llama-3.1-8B, Qwen3-0.6B
def test_rope_store_kv_gpu(hq, hkv, d, qk_norm, fp8_cache):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    _check(rope_store.rope_store_kv, 37, hq, hkv, d, torch.bfloat16, FP8 if fp8_cache else torch.bfloat16, qk_norm,
           "cuda")
