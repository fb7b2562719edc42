"""Per-token activation quantisation fused into its producer (kvant.kernels.quant_rows.rms_norm_quant and
silu_and_mul_quant) in the Triton interpreter: bit for bit the unfused kernels' result (RMSNorm or SiLU·mul, then
quant_rows), and close to the torch reference."""
import pytest
import torch

from kvant.kernels import quant_rows
from kvant.kernels.activation import silu_and_mul_triton
from kvant.kernels.formats import FP8
from kvant.kernels.rmsnorm import rms_norm_triton

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="interpreter tests pass CPU tensors; test_gpu.py covers the GPU")


def _dequant(q, scale):
    return q.float() * scale


@pytest.mark.parametrize("qdtype", [FP8, torch.int8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,h,residual", [(3, 96, False), (5, 200, True), (1, 64, True)])
def test_rms_norm_quant(qdtype, dtype, m, h, residual):
    g = torch.Generator().manual_seed(m * 100 + h)
    x = (torch.randn(m, h, generator=g) * 3).to(dtype)
    r = torch.randn(m, h, generator=g).to(dtype) if residual else None
    w = (torch.rand(h, generator=g) + 0.5).to(dtype)
    got = quant_rows.rms_norm_quant_triton(x, w, 1e-6, r, qdtype)
    unfused = rms_norm_triton(x, w, 1e-6, r)
    y = unfused[0] if residual else unfused
    q, s = quant_rows.quant_rows_triton(y, qdtype)
    assert torch.equal(got[0].view(torch.uint8), q.view(torch.uint8)) and torch.equal(got[1], s)
    if residual:
        assert torch.equal(got[2], unfused[1])
    want = quant_rows.rms_norm_quant_ref(x, w, 1e-6, r, qdtype)
    tol = 0.15 if qdtype == FP8 else 0.02  # two steps of the 8-bit grid at its top, relative to the row max
    torch.testing.assert_close(_dequant(*got[:2]), _dequant(*want[:2]), atol=tol * float(y.abs().max()), rtol=0)


@pytest.mark.parametrize("qdtype", [FP8, torch.int8])
@pytest.mark.parametrize("m,i", [(2, 80), (3, 5000)])  # 5000: more than one 4096-wide block per row
def test_silu_and_mul_quant(qdtype, m, i):
    g = torch.Generator().manual_seed(m + i)
    x = (torch.randn(m, 2 * i, generator=g) * 2).to(torch.bfloat16)
    got = quant_rows.silu_and_mul_quant_triton(x, qdtype)
    q, s = quant_rows.quant_rows_triton(silu_and_mul_triton(x), qdtype)
    assert torch.equal(got[0].view(torch.uint8), q.view(torch.uint8)) and torch.equal(got[1], s)
    want = quant_rows.silu_and_mul_quant_ref(x, qdtype)
    tol = 0.15 if qdtype == FP8 else 0.02
    torch.testing.assert_close(_dequant(*got), _dequant(*want), atol=tol * float(want[1].max()) * 127, rtol=0)


def test_fused_quant_rejects_other_dtypes():
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="float8_e4m3fn or int8"):
        quant_rows.rms_norm_quant_triton(x, torch.ones(64, dtype=torch.bfloat16), 1e-6, None, torch.bfloat16)
    with pytest.raises(ValueError, match="float8_e4m3fn or int8"):
        quant_rows.silu_and_mul_quant_triton(x, torch.uint8)
