"""W4A16 GEMV for 1..4 rows (decode) on CUDA cores, on the repacked layout (kvant.kernels.w4a16_layout).

Per word and pair i, one shift and one AND/OR give the fp32 bit pattern of 128 + u for element 2i (low half moved up)
and one more pair of ops 128 + u for element 2i + 1, with no int->float conversion; each dequantized value is
shared by every row. The offset (128 + zero code) and the group scale are applied once per group to the sums:
sum_k x (u - zero) s = (sum_k x (128 + u) - (128 + zero) sum_k x) s. Split-K reduced in-kernel (kvant.kernels.splitk).
"""
import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import num_sms
from kvant.kernels.splitk import split_count, splitk_buffers, store_or_reduce
from kvant.kernels.w4a16_args import largest_pow2_divisor
from kvant.kernels.w4a16_layout import check_repacked

# (BLOCK_N, BLOCK_K, num_warps, num_stages, waves): the old GEMV's H200 best (bench/RESULTS.md) as the start point
FAST_GEMV_CONFIG = (16, 1024, 4, 3, 2)
MAX_ROWS = 4
F128 = tl.constexpr(0x43000000)  # fp32 128.0; a nibble u in bits 16..19 of its mantissa makes 128 + u


@triton.jit
def _fast_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, stride_xm, stride_wn, stride_om,
                      TILES_PER_SPLIT, HAS_ZP: tl.constexpr, SPLIT: tl.constexpr, ROWS: tl.constexpr,
                      GROUP: tl.constexpr, NG: tl.constexpr, BLOCK_N: tl.constexpr):
    # one tile = BLOCK_N weight rows x NG whole groups; words viewed [BLOCK_N, NG, WPG]
    WPG: tl.constexpr = GROUP // 8
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_r = tl.arange(0, ROWS)
    mask_r = offs_r < M
    n3 = offs_n[:, None, None]
    x_rows = x_ptr + offs_r[:, None, None] * stride_xm  # [ROWS, 1, 1]
    acc = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, (K // GROUP) // NG)):
        groups = t * NG + tl.arange(0, NG)  # [NG]
        offs_w = groups[:, None] * WPG + tl.arange(0, WPG)[None, :]  # [NG, WPG]
        words = tl.load(w_ptr + n3.to(tl.int64) * stride_wn + offs_w[None, :, :], mask=n3 < N, other=0,
                        eviction_policy="evict_first")  # [BLOCK_N, NG, WPG]
        dot = tl.zeros((ROWS, BLOCK_N, NG, WPG), dtype=tl.float32)
        x_sum = tl.zeros((ROWS, NG, WPG), dtype=tl.float32)
        for i in tl.static_range(4):
            lo = (((words << (16 - 4 * i)) & 0x000F0000) | F128).to(tl.float32, bitcast=True)
            hi = (((words >> (4 * i)) & 0x000F0000) | F128).to(tl.float32, bitcast=True)
            xk = x_rows + offs_w[None, :, :] * 8 + 2 * i
            x_e = tl.load(xk, mask=mask_r[:, None, None], other=0.0, eviction_policy="evict_last").to(tl.float32)
            x_o = tl.load(xk + 1, mask=mask_r[:, None, None], other=0.0, eviction_policy="evict_last").to(tl.float32)
            dot += lo[None, :, :, :] * x_e[:, None, :, :] + hi[None, :, :, :] * x_o[:, None, :, :]
            x_sum += x_e + x_o
        gcol = groups[None, :] * N + offs_n[:, None]  # [BLOCK_N, NG] into [K // G, N]
        scale = tl.load(s_ptr + gcol, mask=mask_n[:, None], other=0.0).to(tl.float32)
        if HAS_ZP:
            offset = tl.load(z_ptr + gcol, mask=mask_n[:, None], other=0.0).to(tl.float32) + 128.0
        else:
            offset = tl.full((1, 1), 136.0, tl.float32)
        xs = tl.sum(x_sum, axis=2)[:, None, :]  # [ROWS, 1, NG]: x summed over each group
        acc += tl.sum((tl.sum(dot, axis=3) - offset[None, :, :] * xs) * scale[None, :, :], axis=2)
    out = out_ptr + offs_r[:, None] * stride_om + offs_n[None, :]
    store_or_reduce(acc, out, mask_r[:, None] & mask_n[None, :], ws_ptr, cnt_ptr, pid_n, pid_k, SPLIT, ROWS, BLOCK_N)


def w4a16_fast_gemv_triton(x, qweight, scales, group_size, zeros=None, config=None) -> torch.Tensor:
    """x [M <= 4, K] -> [M, N]; group_size a power of two >= 8 (whole words per group)."""
    check_repacked(x, qweight, scales, group_size, zeros, sixteen_bit=True)
    m, k = x.shape
    n = qweight.shape[0]
    if m > MAX_ROWS or group_size & (group_size - 1):
        raise ValueError(f"w4a16_fast_gemv_triton takes 1..{MAX_ROWS} rows and a power-of-two group size, "
                         f"got {m} rows, group_size {group_size}")
    x = x if x.stride(-1) == 1 else x.contiguous()
    bn, bk, warps, stages, waves = config or FAST_GEMV_CONFIG
    ng = largest_pow2_divisor(k // group_size, max(1, bk // group_size))
    split, per_split = split_count((k // group_size) // ng, triton.cdiv(n, bn), num_sms(x.device), waves)
    rows = triton.next_power_of_2(m)
    ws, cnt = splitk_buffers(x.device, triton.cdiv(n, bn), split, rows * bn)
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    _fast_gemv_kernel[(triton.cdiv(n, bn), split)](
        x, qweight, scales, zeros if zeros is not None else scales, out, ws, cnt, m, n, k, x.stride(0),
        qweight.stride(0), out.stride(0), per_split, HAS_ZP=zeros is not None, SPLIT=split, ROWS=rows,
        GROUP=group_size, NG=ng, BLOCK_N=bn, num_warps=warps, num_stages=stages)
    return out
