"""W4A16 on the tensor cores for 5..256 rows, on the repacked layout (kvant.kernels.w4a16_layout): swap-AB (the
weight tile is the MMA's wide operand, fed from registers where it is dequantized; the few tokens are the narrow one),
the group scale applied to each tile's fp32 partial sum, split-K reduced in-kernel (kvant.kernels.splitk). Also the
dequantize + vendor GEMM path for prefill-sized inputs, and the "wide" tile for 32..256 rows: the tokens are the MMA's
64-row side and the dequantized weight tile its wide side (up to 256 columns per instruction), programs that share a
weight tile launched next to each other."""
import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import interpreted, num_sms, pdl_enter, pdl_launch
from kvant.kernels.splitk import split_count, splitk_buffers, store_or_reduce
from kvant.kernels.w4a16_args import largest_pow2_divisor
from kvant.kernels.w4a16_layout import MAGIC16, check_repacked, dequant_words, group_scale_zero, magic_zero


@triton.jit
def _k_tile(x_ptr, w_rows, s_ptr, z_ptr, t, last, zero, offs_m, offs_n, mask_m, mask_n, stride_xm, N, G,
            HAS_ZP: tl.constexpr, BF16: tl.constexpr, UPCAST: tl.constexpr, BLOCK_K: tl.constexpr):
    # K step t of a tile kernel, given its zero code (loaded a step ahead): the weight tile dequantized to exact codes
    # minus zero [BLOCK_N, BLOCK_K], the x tile [BLOCK_M, BLOCK_K], and step t + 1's scale and zero code of each
    # weight row (w4a16_layout.group_scale_zero; the last step's again at the end); BLOCK_K divides G
    s_next, z_next = group_scale_zero(s_ptr, z_ptr, tl.minimum(t + 1, last - 1) * BLOCK_K, G, N, offs_n, mask_n,
                                      HAS_ZP)
    words = tl.load(w_rows + t * (BLOCK_K // 8) + tl.arange(0, BLOCK_K // 8)[None, :], mask=mask_n[:, None],
                    other=0)  # [BLOCK_N, BLOCK_K / 8] int32
    offs_k = t * BLOCK_K + tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=mask_m[:, None], other=0.0)
    return dequant_words(words, magic_zero(zero, HAS_ZP, BF16)[:, None], BF16, UPCAST), x, s_next, z_next


@triton.jit
def _swapab_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, G, stride_xm, stride_wn, stride_om,
                   TILES_PER_SPLIT, HAS_ZP: tl.constexpr, SPLIT: tl.constexpr, BF16: tl.constexpr,
                   UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   PDL: tl.constexpr = False, SCALE_IN: tl.constexpr = False):
    # acc [BLOCK_N, BLOCK_M] = W tile [BLOCK_N, BLOCK_K] @ x tile^T [BLOCK_K, BLOCK_M]; BLOCK_K divides G, so each
    # tile has one scale (and zero) per weight row. SCALE_IN as in _wide_kernel: the weight tile scaled in 16 bits
    # (it stays the MMA's register operand), so the MMAs accumulate into acc back to back
    pdl_enter(PDL)
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    w_rows = w_ptr + offs_n[:, None].to(tl.int64) * stride_wn
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    first = pid_k * TILES_PER_SPLIT
    last = tl.minimum(first + TILES_PER_SPLIT, K // BLOCK_K)
    scale, zero = group_scale_zero(s_ptr, z_ptr, first * BLOCK_K, G, N, offs_n, mask_n, HAS_ZP)
    for t in range(first, last):
        w, x, s_next, z_next = _k_tile(x_ptr, w_rows, s_ptr, z_ptr, t, last, zero, offs_m, offs_n, mask_m, mask_n,
                                       stride_xm, N, G, HAS_ZP, BF16, UPCAST, BLOCK_K)
        if UPCAST:
            w = w.to(tl.float32)
            x = x.to(tl.float32)
        if SCALE_IN:
            acc = tl.dot((w * scale.to(w.dtype)[:, None]).to(x.dtype), tl.trans(x), acc)
        else:
            acc += tl.dot(w, tl.trans(x)) * scale.to(tl.float32)[:, None]
        scale, zero = s_next, z_next
    out = out_ptr + offs_m[None, :] * stride_om + offs_n[:, None]
    tile_id = pid_m * tl.num_programs(0) + pid_n
    store_or_reduce(acc, out, mask_n[:, None] & mask_m[None, :], ws_ptr, cnt_ptr, tile_id, pid_k, SPLIT, BLOCK_N,
                    BLOCK_M)


@triton.jit
def _wide_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, G, stride_xm, stride_wn, stride_om,
                 TILES_PER_SPLIT, SPLIT, HAS_ZP: tl.constexpr, BF16: tl.constexpr, UPCAST: tl.constexpr,
                 SCALE_IN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 PDL: tl.constexpr = False):
    # acc [BLOCK_M, BLOCK_N] = x tile [BLOCK_M, BLOCK_K] @ W tile^T [BLOCK_K, BLOCK_N]; BLOCK_K divides G. SPLIT is
    # a runtime int (one compile serves every split count but 1, which Triton specialises). SCALE_IN
    # scales the dequantized tile in 16 bits (the weight rounded once, as a dequantizing GEMM does), so the MMAs
    # accumulate into acc back to back; otherwise each tile's fp32 partial sum is scaled (exact codes times x)
    pdl_enter(PDL)
    pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)  # neighbours share a weight tile
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    w_rows = w_ptr + offs_n[:, None].to(tl.int64) * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    first = pid_k * TILES_PER_SPLIT
    last = tl.minimum(first + TILES_PER_SPLIT, K // BLOCK_K)
    scale, zero = group_scale_zero(s_ptr, z_ptr, first * BLOCK_K, G, N, offs_n, mask_n, HAS_ZP)
    for t in range(first, last):
        w, x, s_next, z_next = _k_tile(x_ptr, w_rows, s_ptr, z_ptr, t, last, zero, offs_m, offs_n, mask_m, mask_n,
                                       stride_xm, N, G, HAS_ZP, BF16, UPCAST, BLOCK_K)
        if UPCAST:
            w = w.to(tl.float32)
            x = x.to(tl.float32)
        if SCALE_IN:
            w = w * scale.to(w.dtype)[:, None]
            acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
        else:
            acc += tl.dot(x, tl.trans(w)) * scale.to(tl.float32)[None, :]
        scale, zero = s_next, z_next
    out = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tile_id = pid_n * tl.num_programs(0) + pid_m
    store_or_reduce(acc, out, mask_m[:, None] & mask_n[None, :], ws_ptr, cnt_ptr, tile_id, pid_k, SPLIT, BLOCK_M,
                    BLOCK_N)


@triton.jit
def _dequant_kernel(w_ptr, s_ptr, z_ptr, out_ptr, N, K, G, stride_wn, HAS_ZP: tl.constexpr, BF16: tl.constexpr,
                    UPCAST: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    # repacked [N, K / 8] -> 16-bit [N, K]; 8 BLOCK_W divides G: one scale per row per program
    pid_n, pid_w = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_w = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    words = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_w[None, :], mask=mask_n[:, None], other=0)
    scale, zero = group_scale_zero(s_ptr, z_ptr, pid_w * BLOCK_W * 8, G, N, offs_n, mask_n, HAS_ZP)
    w = dequant_words(words, magic_zero(zero, HAS_ZP, BF16)[:, None], BF16, UPCAST).to(tl.float32)
    w = w * scale.to(tl.float32)[:, None]  # [BLOCK_N, 8 BLOCK_W]
    offs_k = pid_w * BLOCK_W * 8 + tl.arange(0, BLOCK_W * 8)
    tl.store(out_ptr + offs_n[:, None].to(tl.int64) * K + offs_k[None, :], w.to(out_ptr.dtype.element_ty),
             mask=mask_n[:, None])


def swapab_config(m: int, group_size: int) -> tuple[int, int, int, int, int, int]:
    # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, waves): the token side padded to the next power of two
    # (>= 16, the MMA's narrow side), 64 weight rows (one warpgroup's MMA) while the token side is small
    bk = largest_pow2_divisor(group_size, 128)
    if m <= 16:
        return 16, 64, bk, 4, 4, 2
    if m <= 32:
        return 32, 64, bk, 4, 4, 2
    if m <= 64:  # H100 2026-12-05 (bench/RESULTS.md): 64 weight rows and 2 waves ran qkv 1.49x faster than 128 and 1
        return 64, 64, bk, 4, 3, 2
    return 128, 128, bk, 8, 3, 1


def _tile_operands(x, qweight, scales, group_size, zeros, bm, bn, bk, waves):
    """What both tile kernels take beside their config: (x with unit stride in K, out, split-K workspace, counters,
    split count, K tiles per split), after the argument checks."""
    check_repacked(x, qweight, scales, group_size, zeros, sixteen_bit=True)
    if group_size % 16:
        raise ValueError(f"the tensor-core W4A16 kernel needs a group size that is a multiple of 16, got {group_size}")
    if group_size % bk:
        raise ValueError(f"BLOCK_K={bk} must divide group_size={group_size}")
    (m, k), n = x.shape, qweight.shape[0]
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    split, per_split = split_count(k // bk, tiles, num_sms(x.device), waves)
    ws, cnt = splitk_buffers(x.device, tiles, split, bm * bn)
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    return x if x.stride(-1) == 1 else x.contiguous(), out, ws, cnt, split, per_split


def w4a16_swapab_triton(x, qweight, scales, group_size, zeros=None, config=None) -> torch.Tensor:
    """x [M, K] -> [M, N]; qweight/scales/zeros as repack_w4 makes them; group_size a multiple of 16; config =
    swapab_config's fields[, scale_in]."""
    (m, k), n = x.shape, qweight.shape[0]
    bm, bn, bk, warps, stages, waves, *scale_in = config or swapab_config(m, group_size)
    x, out, ws, cnt, split, per_split = _tile_operands(x, qweight, scales, group_size, zeros, bm, bn, bk, waves)
    _swapab_kernel[(triton.cdiv(n, bn), triton.cdiv(m, bm), split)](
        x, qweight, scales, zeros if zeros is not None else scales, out, ws, cnt, m, n, k, group_size, x.stride(0),
        qweight.stride(0), out.stride(0), per_split, HAS_ZP=zeros is not None, SPLIT=split,
        BF16=x.dtype == torch.bfloat16, UPCAST=interpreted(_swapab_kernel), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        SCALE_IN=bool(scale_in and scale_in[0]), num_warps=warps, num_stages=stages, **pdl_launch(x.device))
    return out


def wide_config(m: int, group_size: int) -> tuple[int, int, int, int, int, int, bool]:
    # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, waves, scale_in): the H100 sweep's best on gate_up at 64,
    # 128 and 256 rows (bench/RESULTS.md, 2026-12-07)
    bk = largest_pow2_divisor(group_size, 128 if m <= 64 else 64)
    return (64 if m <= 64 else 128), 128, bk, 4 if m <= 64 else 8, 3, 1, True


def w4a16_wide_triton(x, qweight, scales, group_size, zeros=None, config=None) -> torch.Tensor:
    """x [M, K] -> [M, N] with the wide tile; qweight/scales/zeros as repack_w4 makes them; group_size a multiple
    of 16."""
    (m, k), n = x.shape, qweight.shape[0]
    bm, bn, bk, warps, stages, waves, scale_in = config or wide_config(m, group_size)
    x, out, ws, cnt, split, per_split = _tile_operands(x, qweight, scales, group_size, zeros, bm, bn, bk, waves)
    _wide_kernel[(triton.cdiv(m, bm), triton.cdiv(n, bn), split)](
        x, qweight, scales, zeros if zeros is not None else scales, out, ws, cnt, m, n, k, group_size, x.stride(0),
        qweight.stride(0), out.stride(0), per_split, split, HAS_ZP=zeros is not None, BF16=x.dtype == torch.bfloat16,
        UPCAST=interpreted(_wide_kernel), SCALE_IN=bool(scale_in), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        num_warps=warps, num_stages=stages, **pdl_launch(x.device))
    return out


def dequant_repacked_triton(qweight, scales, group_size, zeros=None, dtype=torch.bfloat16) -> torch.Tensor:
    # fp32 output (exact: tests) builds the values through the bf16 bit trick
    if dtype not in (*MAGIC16, torch.float32):
        raise ValueError(f"dtype must be bfloat16, float16 or float32, got {dtype}")
    n, k = qweight.shape[0], qweight.shape[1] * 8
    out = torch.empty(n, k, dtype=dtype, device=qweight.device)
    bw = largest_pow2_divisor(group_size // 8, 32)
    bn = 32
    _dequant_kernel[(triton.cdiv(n, bn), k // 8 // bw)](
        qweight, scales, zeros if zeros is not None else scales, out, n, k, group_size, qweight.stride(0),
        HAS_ZP=zeros is not None, BF16=dtype != torch.float16, UPCAST=interpreted(_dequant_kernel), BLOCK_N=bn,
        BLOCK_W=bw, num_warps=4)
    return out


def w4a16_repacked_dequant_mm(x, qweight, scales, group_size, zeros=None) -> torch.Tensor:
    # prefill: compute-bound, so dequantizing the weight once per call costs little next to the GEMM
    check_repacked(x, qweight, scales, group_size, zeros)
    return x @ dequant_repacked_triton(qweight, scales, group_size, zeros, x.dtype).t()
