import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import interpreted, num_sms, on_cuda
from kvant.kernels.int4_pack import unpack_int4


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


# ---- Triton ----
@triton.jit
def _w4a16_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, K, G, stride_xm, stride_wn, stride_sn, stride_zn,
                  stride_om, TILES_PER_SPLIT, HAS_ZP: tl.constexpr, SPLIT: tl.constexpr, UPCAST: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    shifts = tl.arange(0, 8) * 4
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    num_tiles = K // BLOCK_K
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, num_tiles)):
        # BLOCK_K divides G: the whole tile shares one scale (and zero point) per output column
        offs_k = t * BLOCK_K + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask_m[:, None], other=0.0)
        offs_w = t * (BLOCK_K // 8) + tl.arange(0, BLOCK_K // 8)
        words = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_w[None, :], mask=mask_n[:, None],
                        other=0)  # [BLOCK_N, BLOCK_K / 8] int32
        q = tl.reshape((words[:, :, None] >> shifts[None, None, :]) & 0xF, (BLOCK_N, BLOCK_K)) - 8
        group = t * BLOCK_K // G
        if HAS_ZP:
            zw = tl.load(z_ptr + (offs_n // 8) * stride_zn + group, mask=mask_n, other=0)
            q = q - (((zw >> ((offs_n % 8) * 4)) & 0xF) - 8)[:, None]
        scale = tl.load(s_ptr + offs_n * stride_sn + group, mask=mask_n, other=0.0).to(tl.float32)
        # |q - zp| <= 15 is exact in 16 bits; the scale is applied to the fp32 partial sum
        w = q.to(tl.float32)
        if UPCAST:
            part = tl.dot(x.to(tl.float32), tl.trans(w))
        else:
            part = tl.dot(x, tl.trans(w.to(x.dtype)))
        acc += part * scale[None, :]
    out = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT > 1:
        tl.atomic_add(out, acc, mask=mask)
    else:
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _block_k(group_size: int, cap: int) -> int:
    bk = group_size & -group_size  # the largest power of two dividing the group
    return min(bk, cap)


def w4a16_gemm_triton(x, weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    m, k = x.shape
    n = weight_packed.shape[0]
    if weight_packed.dtype != torch.int32 or weight_packed.shape[1] * 8 != k:
        raise ValueError(f"weight_packed must be int32 [N, {k // 8}], got {weight_packed.dtype} "
                         f"{tuple(weight_packed.shape)}")
    if k % group_size or group_size % 16:
        raise ValueError(f"group_size must divide K={k} and be a multiple of 16, got {group_size}")
    if weight_scale.shape != (n, k // group_size):
        raise ValueError(f"weight_scale must be [{n}, {k // group_size}], got {tuple(weight_scale.shape)}")
    x = x if x.stride(-1) == 1 else x.contiguous()
    weight_packed, weight_scale = weight_packed.contiguous(), weight_scale.contiguous()
    zp = weight_zero_point.contiguous() if weight_zero_point is not None else weight_packed
    if m <= 16:  # decode: weight-bandwidth bound, split K so that every SM streams weights
        bm, bn, bk, warps, stages = 16, 64, _block_k(group_size, 256), 4, 4
    else:
        bm, bn, bk, warps, stages = (64 if m <= 64 else 128), 128, _block_k(group_size, 64), 8, 3
    num_tiles = k // bk
    tiles_mn = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    split = max(1, min(num_tiles, 2 * num_sms(x.device) // tiles_mn)) if m <= 16 else 1
    per_split = triton.cdiv(num_tiles, split)
    split = triton.cdiv(num_tiles, per_split)
    out = torch.zeros(m, n, dtype=torch.float32, device=x.device) if split > 1 else torch.empty(
        m, n, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, bn), triton.cdiv(m, bm), split)
    _w4a16_kernel[grid](x, weight_packed, weight_scale, zp, out, m, n, k, group_size, x.stride(0),
                        weight_packed.stride(0), weight_scale.stride(0), zp.stride(0), out.stride(0), per_split,
                        HAS_ZP=weight_zero_point is not None, SPLIT=split, UPCAST=interpreted(_w4a16_kernel), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                        num_warps=warps, num_stages=stages)
    return out.to(x.dtype) if split > 1 else out


def w4a16_gemm(x, weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    if on_cuda(x, weight_packed, weight_scale, weight_zero_point):
        return w4a16_gemm_triton(x, weight_packed, weight_scale, group_size, weight_zero_point)
    return w4a16_gemm_ref(x, weight_packed, weight_scale, group_size, weight_zero_point)
