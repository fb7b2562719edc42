"""W4A16 GEMV for one row (batch-1 decode) on CUDA cores, split-K reduced in-kernel (kvant.kernels.splitk)."""
import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import num_sms
from kvant.kernels.splitk import split_count, splitk_buffers, store_or_reduce
from kvant.kernels.w4a16_args import MAGIC, check_args, nibble_offset, operands

# (BLOCK_N, BLOCK_K, num_warps, num_stages, waves, grouped): the H200 sweep's best at one row (bench/RESULTS.md);
# waves = programs per SM that split-K aims for; grouped = one scale per group sum where the group divides the tile
GEMV_CONFIG = (16, 1024, 4, 3, 2, True)


@triton.jit
def _w4a16_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, ws_ptr, cnt_ptr, N, K, G, stride_wn, stride_sn,
                       stride_zn, TILES_PER_SPLIT, HAS_ZP: tl.constexpr, SPLIT: tl.constexpr, GROUP: tl.constexpr,
                       PAIRS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # Plane j of a word tile holds k = 8 * word + j and meets x's matching stride-8 columns. Products are summed
    # before the group scale is applied: GROUP > 0 (it divides BLOCK_K) views the tile as [BLOCK_N, groups, words per
    # group] and scales each group's sum once; GROUP = 0 scales each word's sum (any G that is a multiple of 8).
    NG: tl.constexpr = BLOCK_K // GROUP if GROUP > 0 else BLOCK_K // 8
    WPG: tl.constexpr = GROUP // 8 if GROUP > 0 else 1
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    n3 = offs_n[:, None, None]
    acc = tl.zeros((BLOCK_N, NG), dtype=tl.float32)
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, K // BLOCK_K)):
        offs_w = t * (BLOCK_K // 8) + tl.arange(0, NG)[:, None] * WPG + tl.arange(0, WPG)[None, :]  # [NG, WPG]
        words = tl.load(w_ptr + n3.to(tl.int64) * stride_wn + offs_w[None, :, :], mask=n3 < N, other=0,
                        eviction_policy="evict_first")  # [BLOCK_N, NG, WPG] int32
        if GROUP > 0:
            gcol = (t * (BLOCK_K // GROUP) + tl.arange(0, NG))[None, :]
            scale = tl.load(s_ptr + offs_n[:, None] * stride_sn + gcol, mask=mask_n[:, None], other=0.0)
            offset = nibble_offset(z_ptr, offs_n[:, None], gcol, stride_zn, mask_n[:, None], HAS_ZP)
            if HAS_ZP and not PAIRS:
                offset = offset[:, :, None]
        else:
            gcol = ((offs_w * 8) // G)[None, :, :]
            scale = tl.load(s_ptr + n3 * stride_sn + gcol, mask=n3 < N, other=0.0)
            offset = nibble_offset(z_ptr, n3, gcol, stride_zn, n3 < N, HAS_ZP)
        if PAIRS:  # GROUP > 0: nibbles 2p, 2p+1 moved to mantissa bits 15..22 of 256.0 give 256 + u and 256 + 16u
            s_even = tl.zeros((BLOCK_N, NG, WPG), dtype=tl.float32)
            s_odd = tl.zeros((BLOCK_N, NG, WPG), dtype=tl.float32)
            x_sum = tl.zeros((NG, WPG), dtype=tl.float32)
            x_odd_sum = tl.zeros((NG, WPG), dtype=tl.float32)
            for p in tl.static_range(4):
                if p < 2:
                    moved = words << (15 - 8 * p)
                else:
                    moved = words >> (8 * p - 15)
                x_e = tl.load(x_ptr + offs_w * 8 + 2 * p, eviction_policy="evict_last").to(tl.float32)
                x_o = tl.load(x_ptr + offs_w * 8 + 2 * p + 1, eviction_policy="evict_last").to(tl.float32)
                s_even += ((moved & 0x00078000) | 0x43800000).to(tl.float32, bitcast=True) * x_e[None, :, :]
                s_odd += ((moved & 0x00780000) | 0x43800000).to(tl.float32, bitcast=True) * x_o[None, :, :]
                x_sum += x_e + x_o
                x_odd_sum += x_o
            xs = tl.sum(x_sum, axis=1)[None, :]  # [1, NG]: x summed over each group
            xs_odd = tl.sum(x_odd_sum, axis=1)[None, :]
            # sum x * u = (S_even - 256 xs_even) + (S_odd - 256 xs_odd) / 16; minus (offset - 2**23) * xs
            dot_u = tl.sum(s_even, axis=2) - 256.0 * (xs - xs_odd) + (tl.sum(s_odd, axis=2) - 256.0 * xs_odd) / 16.0
            acc += (dot_u - (offset - 8388608.0) * xs) * scale.to(tl.float32)
        else:
            dot = tl.zeros((BLOCK_N, NG, WPG), dtype=tl.float32)
            for j in tl.static_range(8):
                x = tl.load(x_ptr + offs_w * 8 + j, eviction_policy="evict_last").to(tl.float32)  # [NG, WPG]
                w = (((words >> (4 * j)) & 0xF) | MAGIC).to(tl.float32, bitcast=True) - offset
                dot += w * x[None, :, :]
            if GROUP > 0:
                acc += tl.sum(dot, axis=2) * scale.to(tl.float32)
            else:
                acc += tl.sum(dot * scale.to(tl.float32), axis=2)
    out = tl.sum(acc, axis=1)[None, :]  # [1, BLOCK_N]
    store_or_reduce(out, out_ptr + offs_n[None, :], mask_n[None, :], ws_ptr, cnt_ptr, pid_n, pid_k, SPLIT, 1, BLOCK_N)


def w4a16_gemv_triton(x, weight_packed, weight_scale, group_size, weight_zero_point=None,
                      config: tuple | None = None) -> torch.Tensor:
    """x [1, K] -> [1, N]; config = GEMV_CONFIG's fields, for bench sweeps and the tuner, optionally followed by
    `pairs` (the bit trick that skips the per-value subtract; grouped tiles only; not yet measured on a GPU)."""
    m, k = x.shape
    n = weight_packed.shape[0]
    if m != 1:
        raise ValueError(f"w4a16_gemv_triton takes one row, got {m}")
    check_args(x, weight_packed, weight_scale, group_size)
    x, weight_packed, weight_scale, zp = operands(x.contiguous(), weight_packed, weight_scale, weight_zero_point)
    bn, bk, warps, stages, waves, grouped, *rest = config or GEMV_CONFIG
    while k % bk:
        bk //= 2
    grouped = grouped and bk % group_size == 0
    split, per_split = split_count(k // bk, triton.cdiv(n, bn), num_sms(x.device), waves)
    ws, cnt = splitk_buffers(x.device, triton.cdiv(n, bn), split, bn)
    out = torch.empty(1, n, dtype=x.dtype, device=x.device)
    _w4a16_gemv_kernel[(triton.cdiv(n, bn), split)](
        x, weight_packed, weight_scale, zp, out, ws, cnt, n, k, group_size, weight_packed.stride(0),
        weight_scale.stride(0), zp.stride(0), per_split, HAS_ZP=weight_zero_point is not None, SPLIT=split,
        GROUP=group_size if grouped else 0, PAIRS=bool(rest and rest[0]) and grouped, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
    return out
