"""The CPU W4A16 layout (kvant.kernels.w4a16_cpu) against the checkpoint-layout reference, on fresh random inputs."""
import pytest
import torch

from kvant.kernels.int4_pack import pack_int4
from kvant.kernels.w4a16_cpu import prepare_w4_cpu, uses_int4pack, w4a16_cpu_gemm
from kvant.kernels.w4a16_gemm import w4a16_gemm_ref


def _operands(n: int, k: int, group: int, asym: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    scale = (torch.rand(n, k // group, generator=g) * 0.02 + 0.001).to(torch.bfloat16)
    zp = None
    if asym:
        zq = torch.randint(-3, 4, (-(-n // 8) * 8, k // group), generator=g, dtype=torch.int8)
        zp = pack_int4(zq.t().contiguous()).t().contiguous()  # [N // 8, K // G], packed along N
    return pack_int4(q), scale, zp


# (n, k, group): int4 GEMM shapes of the default model (merged qkv 1344, gate_up 3072) and fallbacks: N not a
# multiple of 16 (830), a group size the int4 GEMM lacks (16)
SHAPES = [(1344, 576, 64), (3072, 576, 64), (576, 1536, 128), (64, 256, 32), (830, 544, 32), (64, 128, 16)]


@pytest.mark.parametrize("n, k, group", SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("m", [1, 5])
def test_cpu_layout_matches_the_reference(n, k, group, dtype, asym, m):
    packed, scale, zp = _operands(n, k, group, asym, seed=n + k + m)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m), dtype=torch.float32).to(dtype)
    layout = prepare_w4_cpu(packed, scale, group, zp, dtype)
    assert (layout.packed is not None) == uses_int4pack(n, group, dtype)
    out = w4a16_cpu_gemm(x, layout)
    ref = w4a16_gemm_ref(x, packed, scale, group, zp)
    assert out.dtype == dtype and out.shape == (m, n)
    # fp32: exact weights, fp32 sums; bf16: the output's rounding plus bf16 zero points (asymmetric)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=3e-2, rtol=2e-2)
    torch.testing.assert_close(out.float(), ref.float(), **tol)


def test_int4pack_is_used_for_bf16_and_dense_for_fp32():
    packed, scale, _ = _operands(1344, 576, 64, False, seed=0)
    assert prepare_w4_cpu(packed, scale, 64, None, torch.bfloat16).dense is None
    assert prepare_w4_cpu(packed, scale, 64, None, torch.float32).packed is None
    with pytest.raises(AssertionError, match="layout built for"):
        w4a16_cpu_gemm(torch.randn(1, 576), prepare_w4_cpu(packed, scale, 64, None, torch.bfloat16))
