"""W4A16 for prefill-sized inputs: dequantize the weight to 16 bits once, then the vendor GEMM (compute-bound there,
so the extra weight traffic is small next to the matmul)."""
import torch
import triton
import triton.language as tl

from kvant.kernels.w4a16_args import check_args, nibble_offset, operands


@triton.jit
def _w4_dequant_kernel(w_ptr, s_ptr, z_ptr, out_ptr, N, K, G, stride_wn, stride_sn, stride_zn, HAS_ZP: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    # packed [N, K // 8] -> 16-bit [N, K]: word w of row n expands to k = 8w .. 8w + 7
    pid_n, pid_w = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    mask = (offs_n < N)[:, None] & (offs_w < K // 8)[None, :]
    words = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_w[None, :], mask=mask, other=0)
    group = ((offs_w * 8) // G)[None, :]
    scale = tl.load(s_ptr + offs_n[:, None] * stride_sn + group, mask=mask, other=0.0).to(tl.float32)
    offset = nibble_offset(z_ptr, offs_n[:, None], group, stride_zn, mask, HAS_ZP) - 8388608.0
    q = (words[:, :, None] >> (tl.arange(0, 8) * 4)[None, None, :]) & 0xF
    if HAS_ZP:
        offset = offset[:, :, None]
    w = (q.to(tl.float32) - offset) * scale[:, :, None]
    offs_k = offs_w[:, None] * 8 + tl.arange(0, 8)[None, :]
    ptrs = out_ptr + offs_n[:, None, None].to(tl.int64) * K + offs_k[None, :, :]
    tl.store(ptrs, w.to(out_ptr.dtype.element_ty), mask=mask[:, :, None])


def dequant_w4_triton(weight_packed, weight_scale, group_size, weight_zero_point=None,
                      dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    n, k = weight_packed.shape[0], weight_packed.shape[1] * 8
    out = torch.empty(n, k, dtype=dtype, device=weight_packed.device)
    zp = weight_zero_point if weight_zero_point is not None else weight_packed
    bn, bw = 16, 64
    grid = (triton.cdiv(n, bn), triton.cdiv(k // 8, bw))
    _w4_dequant_kernel[grid](weight_packed, weight_scale, zp, out, n, k, group_size, weight_packed.stride(0),
                             weight_scale.stride(0), zp.stride(0), HAS_ZP=weight_zero_point is not None,
                             BLOCK_N=bn, BLOCK_W=bw, num_warps=4)
    return out


def w4a16_dequant_mm_triton(x, weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    check_args(x, weight_packed, weight_scale, group_size)
    x, weight_packed, weight_scale, zp = operands(x, weight_packed, weight_scale, weight_zero_point)
    w = dequant_w4_triton(weight_packed, weight_scale, group_size, None if weight_zero_point is None else zp, x.dtype)
    return x @ w.t()
