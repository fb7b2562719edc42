"""W4A16 on the tensor cores for a few to a few hundred rows: the "planes" kernel (no nibble interleave, one dot per
nibble plane) and the "tile" kernel (nibbles unpacked into a K-contiguous tile). Both split K with the in-kernel
reduction of kvant.kernels.splitk, so neither needs a zero-fill or a cast launch."""
import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import interpreted, num_sms
from kvant.kernels.splitk import split_count, splitk_buffers, store_or_reduce
from kvant.kernels.w4a16_args import MAGIC, check_args, largest_pow2_divisor, nibble_offset, operands

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, waves); waves = programs per SM that split-K aims for
PLANES_CONFIG = (16, 128, 128, 4, 3, 4)  # 2..8 rows, H200 sweep (bench/RESULTS.md)


@triton.jit
def _w4a16_planes_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, G, stride_xm, stride_wn,
                         stride_sn, stride_zn, stride_om, TILES_PER_SPLIT, HAS_ZP: tl.constexpr,
                         SPLIT: tl.constexpr, UPCAST: tl.constexpr, SCALE_AFTER: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # Plane j of a word tile holds k = 8 * word + j, so the K sum runs as 8 dots over planes, each against the
    # matching stride-8 columns of x; the packed tile is read once, K-major as stored.
    WK: tl.constexpr = BLOCK_K // 8
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, tl.cdiv(K, BLOCK_K))):
        offs_w = t * WK + tl.arange(0, WK)
        mask_w = offs_w < K // 8
        wmask = mask_w[:, None] & mask_n[None, :]
        words = tl.load(w_ptr + offs_n[None, :].to(tl.int64) * stride_wn + offs_w[:, None], mask=wmask,
                        other=0)  # [WK, BLOCK_N] int32
        if SCALE_AFTER:  # the tile lies in one group: scale the fp32 partial sum (exact dequant of q - zp)
            col = (t * BLOCK_K) // G + tl.zeros((WK, 1), tl.int32)
            scale = tl.load(s_ptr + offs_n * stride_sn + (t * BLOCK_K) // G, mask=mask_n,
                            other=0.0).to(tl.float32)[None, :]
        else:  # a word's 8 values share a group (G % 8 == 0): per-word scales, dequantized before the dot
            col = ((offs_w * 8) // G)[:, None]
            scale = tl.load(s_ptr + offs_n[None, :] * stride_sn + col, mask=wmask, other=0.0).to(tl.float32)
        offset = nibble_offset(z_ptr, offs_n[None, :], col, stride_zn, wmask, HAS_ZP)
        part = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for j in tl.static_range(8):
            w = (((words >> (4 * j)) & 0xF) | MAGIC).to(tl.float32, bitcast=True) - offset
            if not SCALE_AFTER:
                w = w * scale
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + (offs_w * 8 + j)[None, :],
                        mask=mask_m[:, None] & mask_w[None, :], other=0.0)  # [BLOCK_M, WK]
            if UPCAST:
                part += tl.dot(x.to(tl.float32), w)
            else:
                part += tl.dot(x, w.to(x.dtype))
        if SCALE_AFTER:
            acc += part * scale
        else:
            acc += part
    out = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tile_id = pid_m * tl.num_programs(0) + pid_n
    store_or_reduce(acc, out, mask_m[:, None] & mask_n[None, :], ws_ptr, cnt_ptr, tile_id, pid_k, SPLIT, BLOCK_M,
                    BLOCK_N)


@triton.jit
def _w4a16_tile_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, G, stride_xm, stride_wn,
                       stride_sn, stride_zn, stride_om, TILES_PER_SPLIT, HAS_ZP: tl.constexpr, SPLIT: tl.constexpr,
                       UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # BLOCK_K divides G: the whole tile shares one scale (and zero point) per output column, applied to the fp32
    # partial sum; |q - zp| <= 15 is exact in 16 bits. (The bit trick made this kernel slower: bench/RESULTS.md.)
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    shifts = tl.arange(0, 8) * 4
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, K // BLOCK_K)):
        offs_k = t * BLOCK_K + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask_m[:, None], other=0.0)
        offs_w = t * (BLOCK_K // 8) + tl.arange(0, BLOCK_K // 8)
        words = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_w[None, :], mask=mask_n[:, None],
                        other=0)  # [BLOCK_N, BLOCK_K / 8] int32
        q = tl.reshape((words[:, :, None] >> shifts[None, None, :]) & 0xF, (BLOCK_N, BLOCK_K))
        group = t * BLOCK_K // G
        offset = nibble_offset(z_ptr, offs_n[:, None], group, stride_zn, mask_n[:, None], HAS_ZP) - 8388608.0
        scale = tl.load(s_ptr + offs_n * stride_sn + group, mask=mask_n, other=0.0).to(tl.float32)
        w = q.to(tl.float32) - offset
        if UPCAST:
            part = tl.dot(x.to(tl.float32), tl.trans(w))
        else:
            part = tl.dot(x, tl.trans(w.to(x.dtype)))
        acc += part * scale[None, :]
    out = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tile_id = pid_m * tl.num_programs(0) + pid_n
    store_or_reduce(acc, out, mask_m[:, None] & mask_n[None, :], ws_ptr, cnt_ptr, tile_id, pid_k, SPLIT, BLOCK_M,
                    BLOCK_N)


def tile_config(m: int, group_size: int) -> tuple[int, int, int, int, int, int]:
    # H100 table of 2026-12-05 (bench/RESULTS.md): 16 rows: 16x64 tiles, K split to ~2 programs per SM; 64 rows:
    # 64x128x128 tiles, 4 warps, split to ~1 program per SM (0.70-1.05x bf16, against 0.43-0.62x for 8 warps,
    # 64-deep K tiles and 2 waves, and 0.43-0.54x for dequantize + cuBLAS)
    if m <= 16:
        return 16, 64, largest_pow2_divisor(group_size, 256), 4, 4, 2
    return 64, 128, largest_pow2_divisor(group_size, 128), 4, 3, 1


def _launch(kernel, x, weight_packed, weight_scale, group_size, weight_zero_point, config, num_k_tiles, **flags):
    m, k = x.shape
    n = weight_packed.shape[0]
    x, weight_packed, weight_scale, zp = operands(x, weight_packed, weight_scale, weight_zero_point)
    bm, bn, bk, warps, stages, waves = config
    grid_mn = (triton.cdiv(n, bn), triton.cdiv(m, bm))
    split, per_split = split_count(num_k_tiles, grid_mn[0] * grid_mn[1], num_sms(x.device), waves)
    ws, cnt = splitk_buffers(x.device, grid_mn[0] * grid_mn[1], split, bm * bn)
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    kernel[(*grid_mn, split)](x, weight_packed, weight_scale, zp, out, ws, cnt, m, n, k, group_size, x.stride(0),
                              weight_packed.stride(0), weight_scale.stride(0), zp.stride(0), out.stride(0),
                              per_split, HAS_ZP=weight_zero_point is not None, SPLIT=split,
                              UPCAST=interpreted(kernel), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps,
                              num_stages=stages, **flags)
    return out


def w4a16_gemm_planes_triton(x, weight_packed, weight_scale, group_size, weight_zero_point=None,
                             config: tuple[int, int, int, int, int, int] | None = None) -> torch.Tensor:
    check_args(x, weight_packed, weight_scale, group_size)
    bm, bn, bk, warps, stages, waves = config or PLANES_CONFIG
    if group_size % bk and bk > 128 and group_size % 128 == 0:
        bk = 128  # keep one group per tile where the group allows it
    return _launch(_w4a16_planes_kernel, x, weight_packed, weight_scale, group_size, weight_zero_point,
                   (bm, bn, bk, warps, stages, waves), triton.cdiv(x.shape[1], bk), SCALE_AFTER=group_size % bk == 0)


def w4a16_gemm_triton(x, weight_packed, weight_scale, group_size, weight_zero_point=None,
                      config: tuple[int, int, int, int, int, int] | None = None) -> torch.Tensor:
    check_args(x, weight_packed, weight_scale, group_size, multiple=16)
    config = config or tile_config(x.shape[0], group_size)
    return _launch(_w4a16_tile_kernel, x, weight_packed, weight_scale, group_size, weight_zero_point, config,
                   x.shape[1] // config[2])
