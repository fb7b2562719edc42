"""W4A16 GEMM (int4 weights, 16-bit activations): the torch reference and the dispatch by row count. The kernels
live one family per file: w4a16_gemv.py (1 row), w4a16_tiles.py (tensor cores), w4a16_dequant.py (prefill)."""
import torch

from kvant.kernels.dispatch import on_cuda
from kvant.kernels.int4_pack import unpack_int4
from kvant.kernels.w4a16_dequant import dequant_w4_triton, w4a16_dequant_mm_triton  # noqa: F401
from kvant.kernels.w4a16_gemv import GEMV_CONFIG, w4a16_gemv_triton
from kvant.kernels.w4a16_tune import lookup
from kvant.kernels.w4a16_tiles import PLANES_CONFIG, w4a16_gemm_planes_triton, w4a16_gemm_triton


# ---- torch reference ----
def dequant_w4_ref(weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    # -> fp32 [N, K]: (q - zp) * scale, q and zp signed int4; zp is packed along dim 0 ([N // 8, K // G])
    n, k = weight_packed.shape[0], weight_packed.shape[1] * 8
    q = unpack_int4(weight_packed, k).float()
    if weight_zero_point is not None:
        zp = unpack_int4(weight_zero_point.t().contiguous(), n).t().float()  # [N, K // G]
        q = q - zp.repeat_interleave(group_size, dim=1)
    return q * weight_scale.float().repeat_interleave(group_size, dim=1)


def w4a16_gemm_ref(x, weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    # x [M, K] 16-bit; weight_packed int32 [N, K // 8]; weight_scale [N, K // G] -> [M, N] in x.dtype
    w = dequant_w4_ref(weight_packed, weight_scale, group_size, weight_zero_point)
    return (x.float() @ w.t()).to(x.dtype)


# ---- dispatch by rows (bench/RESULTS.md has the sweeps behind each bound) ----
GEMV_MAX_M = 1  # one row: the CUDA-core GEMV beats the tensor-core kernels; from 2 it loses
PLANES_MAX_M = 8  # 2..8 rows: the planes kernel beat the tile kernel by 5-12 % (g128 sweeps)
# from this many rows on, dequantize + vendor GEMM: at 64 rows the split-K tile kernel beats it (0.70-1.05x bf16 vs
# 0.43-0.54x), at 256 it loses (0.19-0.29x vs 0.47-0.53x); 65..127 were not measured
DEQUANT_MIN_M = 128


def w4a16_gemm(x, weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    if not on_cuda(x, weight_packed, weight_scale, weight_zero_point):
        return w4a16_gemm_ref(x, weight_packed, weight_scale, group_size, weight_zero_point)
    tuned = lookup(x, weight_packed, group_size, weight_zero_point)
    if tuned is not None:  # measured on this card for this shape and row bucket (kvant.kernels.w4a16_tune)
        kernel, config = tuned
        if config is None:
            return kernel(x, weight_packed, weight_scale, group_size, weight_zero_point)
        return kernel(x, weight_packed, weight_scale, group_size, weight_zero_point, config=config)
    m = x.shape[0]
    if m <= GEMV_MAX_M:
        return w4a16_gemv_triton(x, weight_packed, weight_scale, group_size, weight_zero_point)
    if m >= DEQUANT_MIN_M:
        return w4a16_dequant_mm_triton(x, weight_packed, weight_scale, group_size, weight_zero_point)
    if m <= PLANES_MAX_M and group_size % 128 == 0:
        return w4a16_gemm_planes_triton(x, weight_packed, weight_scale, group_size, weight_zero_point,
                                        config=PLANES_CONFIG)
    if group_size % 16:
        return w4a16_gemm_planes_triton(x, weight_packed, weight_scale, group_size, weight_zero_point)
    return w4a16_gemm_triton(x, weight_packed, weight_scale, group_size, weight_zero_point)
