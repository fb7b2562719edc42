"""The warp-specialized Gluon INT4 tile (kvant.kernels.w4a16_wgmma_ws) on a Hopper GPU, against the torch reference
with the 16-bit-rounded weights (the kernel applies the group scale in 16 bits, as w4a16_wgmma does)."""
import pytest
import torch

from .test_gpu import _int4_case, replay_twice

pytestmark = pytest.mark.gpu


def _skip_unless_sm90():
    from kvant.kernels import w4a16_wgmma_ws as ws

    if not ws.HAVE_GLUON or torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the warp-specialized wgmma tile needs Gluon with warp specialization and an sm_90 GPU")
    return ws


@pytest.mark.parametrize("m", [1, 16, 64, 100, 200, 256])
@pytest.mark.parametrize("k,n", [(4096, 6144), (14336, 4096), (4096, 28672)])
def test_w4a16_wgmma_ws_llama_shapes(m, k, n):
    # every config it offers on Llama-3.1-8B's qkv, down and gate_up, g128; asymmetric at 100 rows, fp32 scales (the
    # engine's, from its random-weight quantization) at 200 and 256
    ws = _skip_unless_sm90()
    group, asym = 128, m == 100
    sdt = torch.float32 if m in (200, 256) else None
    _, _, _, (qweight, scales, zeros), w16 = _int4_case(n, k, group, asym, scale_dtype=sdt)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    assert scales.dtype == (sdt or torch.bfloat16) and ws.supported(x, qweight, scales, group, zeros)
    ref16 = (x.float() @ w16.t()).to(x.dtype)
    for config in ws.CONFIGS:
        out = ws.w4a16_wgmma_ws(x, qweight, scales, group, zeros, config=config)
        torch.testing.assert_close(out, ref16, atol=3e-2, rtol=2e-2, msg=lambda e, c=config: f"{c}: {e}")


@pytest.mark.parametrize("group,asym,dtype", [(64, True, torch.float16), (128, False, torch.bfloat16),
                                              (256, True, torch.bfloat16)])
@pytest.mark.parametrize("m", [1, 33, 130])
def test_w4a16_wgmma_ws_off_the_tiles_in_a_cuda_graph(group, asym, dtype, m):
    # N and K off the tiles (N = 1048: not a multiple of 64 or 128; K = 1792: 28 K steps, split-K on, splits of
    # fewer steps than the rings hold), replayed twice from a CUDA graph on fresh inputs into NaN-poisoned outputs:
    # the split-K counters reset and the padded tokens and rows stay out of the output
    ws = _skip_unless_sm90()
    k, n = 1792, 1048
    _, _, _, (qweight, scales, zeros), w16 = _int4_case(n, k, group, asym, dtype)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    for config in ((128, 8, 4, 2, 4, 64), (64, 4, 3, 2, 1, 128), (128, 8, 3, 3, 8, 256)):
        replay_twice(lambda c=config: ws.w4a16_wgmma_ws(x, qweight, scales, group, zeros, config=c), x,
                     lambda out: torch.testing.assert_close(out, (x.float() @ w16.t()).to(dtype), atol=3e-2,
                                                            rtol=2e-2))
