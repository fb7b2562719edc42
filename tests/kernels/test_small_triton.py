"""Fused RMSNorm(+residual), RoPE and SiLU-and-mul (interpreter on CPU) against the torch references."""
import pytest
import torch

from kvant.kernels import activation, rmsnorm, rope

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="interpreter tests pass CPU tensors; test_gpu.py covers the GPU")

DTYPES = [torch.bfloat16, torch.float16]
# two output-dtype roundings apart at most: the interpreter truncates fp32 -> bf16 casts (GPUs round to nearest), and
# RMSNorm rounds twice (normalised x, then times weight)
TOL = {torch.bfloat16: dict(atol=1e-2, rtol=1.6e-2), torch.float16: dict(atol=1e-3, rtol=1e-3)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 576), (3, 4, 64), (1, 1000)])
def test_rms_norm(dtype, shape):
    g = torch.Generator().manual_seed(shape[-1])
    x = torch.randn(*shape, generator=g).to(dtype)
    res = torch.randn(*shape, generator=g).to(dtype)
    w = (torch.rand(shape[-1], generator=g) + 0.5).to(dtype)
    torch.testing.assert_close(rmsnorm.rms_norm_triton(x, w, 1e-6), rmsnorm.rms_norm_ref(x, w, 1e-6), **TOL[dtype])
    out, summed = rmsnorm.rms_norm_triton(x, w, 1e-6, residual=res)
    out_ref, summed_ref = rmsnorm.rms_norm_ref(x, w, 1e-6, residual=res)
    torch.testing.assert_close(summed, summed_ref, **TOL[dtype])
    torch.testing.assert_close(out, out_ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t,hq,hkv,d", [(5, 9, 3, 64), (1, 4, 4, 128), (13, 6, 2, 32)])
def test_rope(dtype, t, hq, hkv, d):
    g = torch.Generator().manual_seed(t * d)
    max_pos = 64
    freqs = torch.arange(max_pos)[:, None].float() * torch.rand(d // 2, generator=g)[None, :]
    cos_sin = torch.cat([freqs.cos(), freqs.sin()], dim=-1)
    qkv = torch.randn(t, (hq + 2 * hkv) * d, generator=g).to(dtype)
    q = qkv[:, : hq * d].view(t, hq, d)  # non-contiguous views, as a fused qkv projection hands them over
    k = qkv[:, hq * d : (hq + hkv) * d].view(t, hkv, d)
    positions = torch.randint(0, max_pos, (t,), generator=g)
    q_out, k_out = rope.apply_rope_triton(q, k, positions, cos_sin)
    q_ref, k_ref = rope.apply_rope_ref(q, k, positions, cos_sin)
    torch.testing.assert_close(q_out, q_ref, **TOL[dtype])
    torch.testing.assert_close(k_out, k_ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t,i", [(4, 1536), (3, 545)])
def test_silu_and_mul(dtype, t, i):
    x = torch.randn(t, 2 * i, generator=torch.Generator().manual_seed(i)).to(dtype)
    torch.testing.assert_close(activation.silu_and_mul_triton(x), activation.silu_and_mul_ref(x), **TOL[dtype])
