import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import on_cuda


# ---- torch reference ----
def unpack_rows(packed: torch.Tensor, k: int) -> torch.Tensor:
    # int32 [R, k / 8] -> int8 [R, k] in [-8, 7]; pack-quantized: value + 8, element j of a word in bits 4j..4j+3
    shifts = torch.arange(0, 32, 4, device=packed.device, dtype=torch.int32)
    return (((packed[..., None] >> shifts) & 0xF).reshape(packed.shape[0], -1)[:, :k] - 8).to(torch.int8)


def dequant_w4_ref(weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    # -> fp32 [N, K]: (q - zp) * scale, q and zp signed int4; zp is packed along dim 0 ([N // 8, K // G])
    n, k = weight_packed.shape[0], weight_packed.shape[1] * 8
    q = unpack_rows(weight_packed, k).float()
    if weight_zero_point is not None:
        zp = unpack_rows(weight_zero_point.t().contiguous(), n).t().float()  # [N, K // G]
        q = q - zp.repeat_interleave(group_size, dim=1)
    return q * weight_scale.float().repeat_interleave(group_size, dim=1)


def w4a16_gemm_ref(x, weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    # x [M, K] 16-bit; weight_packed int32 [N, K // 8]; weight_scale [N, K // G] -> [M, N] in x.dtype
    w = dequant_w4_ref(weight_packed, weight_scale, group_size, weight_zero_point)
    return (x.float() @ w.t()).to(x.dtype)


def w4a16_gemm(x, weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    if on_cuda(x, weight_packed, weight_scale, weight_zero_point):
        return w4a16_gemm_triton(x, weight_packed, weight_scale, group_size, weight_zero_point)
    return w4a16_gemm_ref(x, weight_packed, weight_scale, group_size, weight_zero_point)
