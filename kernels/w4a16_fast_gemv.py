"""W4A16 GEMV for one row (batch-1 decode) on CUDA cores, on the repacked layout (kvant.kernels.w4a16_layout), split-K
reduced in-kernel (kvant.kernels.splitk). Two ways to build floats from nibbles without an int->float conversion:
- planes (default): nibble position p OR-ed into the mantissa of 2**23 gives 2**23 + u; subtracting 2**23 + zero code
  gives u - zero, which meets x's column 8w + PERM[p];
- pairs: one shift and one AND/OR per value give 128 + u, and the offset is applied once per group to the sums:
  sum_k x (u - zero) = sum_k x (128 + u) - (128 + zero) sum_k x (no subtract per value).
The group scale multiplies each group's sum once in both."""
import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import num_sms, pdl_enter, pdl_launch
from kvant.kernels.splitk import split_count, splitk_buffers, store_or_reduce
from kvant.kernels.w4a16_args import MAGIC, largest_pow2_divisor
from kvant.kernels.w4a16_layout import check_repacked

# (BLOCK_N, BLOCK_K, num_warps, num_stages, waves, pairs): H100 2026-12-05 (bench/RESULTS.md), this one-row form:
# pairs 12.74 us against planes 13.67 us on qkv 4096x6144 g128, and the tuner's pick on qkv and o
FAST_GEMV_CONFIG = (16, 1024, 4, 3, 2, True)
F128 = tl.constexpr(0x43000000)  # fp32 128.0; a nibble u in bits 16..19 of its mantissa makes 128 + u


@triton.jit
def _fast_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, ws_ptr, cnt_ptr, N, K, stride_wn, TILES_PER_SPLIT,
                      HAS_ZP: tl.constexpr, SPLIT: tl.constexpr, PAIRS: tl.constexpr, GROUP: tl.constexpr,
                      NG: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr = False):
    # one tile = BLOCK_N weight rows x NG whole groups; words viewed [BLOCK_N, NG, WPG]
    WPG: tl.constexpr = GROUP // 8
    pdl_enter(PDL)
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    n3 = offs_n[:, None, None]
    acc = tl.zeros((BLOCK_N, NG), dtype=tl.float32)
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, (K // GROUP) // NG)):
        groups = t * NG + tl.arange(0, NG)  # [NG]
        offs_w = groups[:, None] * WPG + tl.arange(0, WPG)[None, :]  # [NG, WPG]
        words = tl.load(w_ptr + n3.to(tl.int64) * stride_wn + offs_w[None, :, :], mask=n3 < N, other=0,
                        eviction_policy="evict_first")  # [BLOCK_N, NG, WPG]
        gcol = groups[None, :] * N + offs_n[:, None]  # [BLOCK_N, NG] into [K // G, N]
        scale = tl.load(s_ptr + gcol, mask=mask_n[:, None], other=0.0).to(tl.float32)
        if HAS_ZP:
            zero = tl.load(z_ptr + gcol, mask=mask_n[:, None], other=0.0).to(tl.float32)
        else:
            zero = tl.full((1, 1), 8.0, tl.float32)
        dot = tl.zeros((BLOCK_N, NG, WPG), dtype=tl.float32)
        if PAIRS:
            x_sum = tl.zeros((NG, WPG), dtype=tl.float32)
            for i in tl.static_range(4):  # bits 4i and 16 + 4i hold elements 2i and 2i + 1
                lo = (((words << (16 - 4 * i)) & 0x000F0000) | F128).to(tl.float32, bitcast=True)
                hi = (((words >> (4 * i)) & 0x000F0000) | F128).to(tl.float32, bitcast=True)
                x_e = tl.load(x_ptr + offs_w * 8 + 2 * i, eviction_policy="evict_last").to(tl.float32)
                x_o = tl.load(x_ptr + offs_w * 8 + 2 * i + 1, eviction_policy="evict_last").to(tl.float32)
                dot += lo * x_e[None, :, :] + hi * x_o[None, :, :]
                x_sum += x_e + x_o
            xs = tl.sum(x_sum, axis=1)[None, :]  # [1, NG]: x summed over each group
            acc += (tl.sum(dot, axis=2) - (zero + 128.0) * xs) * scale
        else:
            offset = zero[:, :, None] + 8388608.0  # 2**23 + zero code
            for p in tl.static_range(8):  # position p holds element PERM[p] = 2 (p % 4) + p // 4
                x = tl.load(x_ptr + offs_w * 8 + 2 * (p % 4) + p // 4, eviction_policy="evict_last").to(tl.float32)
                w = (((words >> (4 * p)) & 0xF) | MAGIC).to(tl.float32, bitcast=True) - offset
                dot += w * x[None, :, :]
            acc += tl.sum(dot, axis=2) * scale
    out = tl.sum(acc, axis=1)[None, :]  # [1, BLOCK_N]
    store_or_reduce(out, out_ptr + offs_n[None, :], mask_n[None, :], ws_ptr, cnt_ptr, pid_n, pid_k, SPLIT, 1, BLOCK_N)


def w4a16_fast_gemv_triton(x, qweight, scales, group_size, zeros=None, config=None) -> torch.Tensor:
    """x [1, K] -> [1, N]; group_size a power of two >= 8 (whole words per group); config = FAST_GEMV_CONFIG's
    fields, for bench sweeps."""
    check_repacked(x, qweight, scales, group_size, zeros, sixteen_bit=True)
    m, k = x.shape
    n = qweight.shape[0]
    if m != 1 or group_size & (group_size - 1):
        raise ValueError(f"w4a16_fast_gemv_triton takes one row and a power-of-two group size, got {m} rows, "
                         f"group_size {group_size}")
    x = x.contiguous()
    bn, bk, warps, stages, waves, pairs = config or FAST_GEMV_CONFIG
    ng = largest_pow2_divisor(k // group_size, max(1, bk // group_size))
    split, per_split = split_count((k // group_size) // ng, triton.cdiv(n, bn), num_sms(x.device), waves)
    ws, cnt = splitk_buffers(x.device, triton.cdiv(n, bn), split, bn)
    out = torch.empty(1, n, dtype=x.dtype, device=x.device)
    _fast_gemv_kernel[(triton.cdiv(n, bn), split)](
        x, qweight, scales, zeros if zeros is not None else scales, out, ws, cnt, n, k, qweight.stride(0), per_split,
        HAS_ZP=zeros is not None, SPLIT=split, PAIRS=pairs, GROUP=group_size, NG=ng, BLOCK_N=bn, num_warps=warps,
        num_stages=stages, **pdl_launch(x.device))
    return out
