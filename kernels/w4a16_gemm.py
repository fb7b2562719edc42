import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import interpreted, num_sms, on_cuda
from kvant.kernels.int4_pack import unpack_int4

MAGIC = tl.constexpr(0x4B000000)  # fp32 bits of 2**23: OR-ing a nibble q into the mantissa gives the float 2**23 + q


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
        # |q - zp| <= 15 is exact in 16 bits; the scale is applied to the fp32 partial sum. (The bit-trick
        # conversion of the other kernels made this one slower on the H200: bench/RESULTS.md.)
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


def _split_k(num_tiles: int, split: int, m: int, n: int, x: torch.Tensor):
    # K cut into `split` (or fewer) even runs of tiles; split runs add into an fp32 output (atomics), cast at the end
    per_split = triton.cdiv(num_tiles, split)
    split = triton.cdiv(num_tiles, per_split)
    out = torch.zeros(m, n, dtype=torch.float32, device=x.device) if split > 1 else torch.empty(
        m, n, dtype=x.dtype, device=x.device)
    return split, per_split, out


def _block_k(group_size: int, cap: int) -> int:
    bk = group_size & -group_size  # the largest power of two dividing the group
    return min(bk, cap)


def w4a16_gemm_triton(x, weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    _check(x, weight_packed, weight_scale, group_size, multiple=16)
    m, k = x.shape
    n = weight_packed.shape[0]
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
    split, per_split, out = _split_k(num_tiles, split, m, n, x)
    grid = (triton.cdiv(n, bn), triton.cdiv(m, bm), split)
    _w4a16_kernel[grid](x, weight_packed, weight_scale, zp, out, m, n, k, group_size, x.stride(0),
                        weight_packed.stride(0), weight_scale.stride(0), zp.stride(0), out.stride(0), per_split,
                        HAS_ZP=weight_zero_point is not None, SPLIT=split, UPCAST=interpreted(_w4a16_kernel), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                        num_warps=warps, num_stages=stages)
    return out.to(x.dtype) if split > 1 else out


@triton.jit
def _w4a16_planes_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, K, G, stride_xm, stride_wn, stride_sn,
                         stride_zn, stride_om, TILES_PER_SPLIT, HAS_ZP: tl.constexpr, SPLIT: tl.constexpr,
                         UPCAST: tl.constexpr, SCALE_AFTER: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # No interleave: plane j of a word tile holds k = 8 * word + j, so the K sum runs as 8 dots over planes, each
    # against the matching stride-8 columns of x; the packed tile is read once, K-major as stored.
    WK: tl.constexpr = BLOCK_K // 8
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    num_tiles = tl.cdiv(K, BLOCK_K)
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, num_tiles)):
        offs_w = t * WK + tl.arange(0, WK)
        mask_w = offs_w < K // 8
        wmask = mask_w[:, None] & mask_n[None, :]
        words = tl.load(w_ptr + offs_n[None, :].to(tl.int64) * stride_wn + offs_w[:, None], mask=wmask,
                        other=0)  # [WK, BLOCK_N] int32
        if SCALE_AFTER:  # the tile lies in one group: scale the fp32 partial sum (exact dequant of q - zp)
            grp = (t * BLOCK_K) // G
            scale = tl.load(s_ptr + offs_n * stride_sn + grp, mask=mask_n, other=0.0).to(tl.float32)[None, :]
            zcol = grp + tl.zeros((WK,), tl.int32)
        else:  # a word's 8 values share a group (G % 8 == 0): per-word scales, dequantised before the dot
            zcol = (offs_w * 8) // G
            scale = tl.load(s_ptr + offs_n[None, :] * stride_sn + zcol[:, None], mask=wmask, other=0.0)
            scale = scale.to(tl.float32)
        if HAS_ZP:
            zw = tl.load(z_ptr + (offs_n // 8)[None, :] * stride_zn + zcol[:, None], mask=wmask, other=0)
            offset = (((zw >> ((offs_n % 8) * 4)[None, :]) & 0xF) + 8388608).to(tl.float32)
        else:
            offset = 8388616.0
        part = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for j in tl.static_range(8):
            # nibble -> float through the mantissa of 2**23 (see MAGIC), no int->float conversion
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
    mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT > 1:
        tl.atomic_add(out, acc, mask=mask)
    else:
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


def w4a16_gemm_planes_triton(x, weight_packed, weight_scale, group_size, weight_zero_point=None,
                             config: tuple[int, int, int, int, int, int] | None = None) -> torch.Tensor:
    _check(x, weight_packed, weight_scale, group_size, multiple=8)
    m, k = x.shape
    n = weight_packed.shape[0]
    x = x if x.stride(-1) == 1 else x.contiguous()
    weight_packed, weight_scale = weight_packed.contiguous(), weight_scale.contiguous()
    zp = weight_zero_point.contiguous() if weight_zero_point is not None else weight_packed
    if m <= 16:  # decode: weight-bandwidth bound, split K so that every SM streams weights
        bm, bn, bk, warps, stages = 16, 64, 256, 4, 3
    else:
        bm, bn, bk, warps, stages = (64 if m <= 64 else 128), 128, 128, 8, 3
    if group_size % bk and bk > 128 and group_size % 128 == 0:
        bk = 128  # keep one group per tile where the group allows it
    waves = 2  # split K until about this many programs per SM
    if config is not None:  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, waves), for bench sweeps
        bm, bn, bk, warps, stages, waves = config
    num_tiles = triton.cdiv(k, bk)
    tiles_mn = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    split = max(1, min(num_tiles, waves * num_sms(x.device) // tiles_mn)) if m <= 16 else 1
    split, per_split, out = _split_k(num_tiles, split, m, n, x)
    grid = (triton.cdiv(n, bn), triton.cdiv(m, bm), split)
    _w4a16_planes_kernel[grid](x, weight_packed, weight_scale, zp, out, m, n, k, group_size, x.stride(0),
                               weight_packed.stride(0), weight_scale.stride(0), zp.stride(0), out.stride(0), per_split,
                               HAS_ZP=weight_zero_point is not None, SPLIT=split,
                               UPCAST=interpreted(_w4a16_planes_kernel), SCALE_AFTER=group_size % bk == 0,
                               BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
    return out.to(x.dtype) if split > 1 else out


@triton.jit
def _w4a16_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, K, G, stride_xm, stride_wn, stride_sn, stride_zn,
                       stride_om, TILES_PER_SPLIT, HAS_ZP: tl.constexpr, SPLIT: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # A few rows (decode): no tensor cores, the weight tile is read once, K-major as stored; plane j of a word tile
    # holds k = 8 * word + j, dequantized in registers and multiplied against x's matching stride-8 columns.
    # Products accumulate in a [BLOCK_M, BLOCK_N, WK] tile that is reduced once at the end.
    WK: tl.constexpr = BLOCK_K // 8
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N, WK), dtype=tl.float32)
    num_tiles = K // BLOCK_K
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, num_tiles)):
        offs_w = t * WK + tl.arange(0, WK)
        words = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_w[None, :], mask=mask_n[:, None],
                        other=0)  # [BLOCK_N, WK] int32
        group = (offs_w * 8) // G  # per word: a tile may span several groups (G % 8 == 0)
        wmask = mask_n[:, None]
        scale = tl.load(s_ptr + offs_n[:, None] * stride_sn + group[None, :], mask=wmask, other=0.0).to(tl.float32)
        if HAS_ZP:
            zw = tl.load(z_ptr + (offs_n // 8)[:, None] * stride_zn + group[None, :], mask=wmask, other=0)
            zp = ((zw >> ((offs_n % 8) * 4)[:, None]) & 0xF) - 8
        for j in tl.static_range(8):
            q = ((words >> (4 * j)) & 0xF) - 8
            if HAS_ZP:
                q = q - zp
            w = q.to(tl.float32) * scale  # [BLOCK_N, WK]
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + (offs_w * 8 + j)[None, :], mask=mask_m[:, None],
                        other=0.0).to(tl.float32)  # [BLOCK_M, WK]
            acc += x[:, None, :] * w[None, :, :]
    out = tl.sum(acc, axis=2)
    ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT > 1:
        tl.atomic_add(ptrs, out, mask=mask)
    else:
        tl.store(ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _w4a16_gemv_magic_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, N, K, G, stride_wn, stride_sn, stride_zn,
                             TILES_PER_SPLIT, HAS_ZP: tl.constexpr, SPLIT: tl.constexpr, GROUP: tl.constexpr,
                             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # One row (batch-1 decode), CUDA cores. A nibble becomes a float without an int->float conversion: OR it into
    # the mantissa of 2**23 and subtract 2**23 + 8 (or 2**23 + zero point). Plane j of a word tile holds
    # k = 8 * word + j and meets x's matching stride-8 columns. Products are summed before the group scale is
    # applied: GROUP > 0 (it divides BLOCK_K) views the tile as [BLOCK_N, groups, words per group] and scales each
    # group's sum once; GROUP = 0 scales each word's sum (any G that is a multiple of 8).
    NG: tl.constexpr = BLOCK_K // GROUP if GROUP > 0 else BLOCK_K // 8
    WPG: tl.constexpr = GROUP // 8 if GROUP > 0 else 1
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    mask3 = mask_n[:, None, None]
    acc = tl.zeros((BLOCK_N, NG), dtype=tl.float32)
    num_tiles = K // BLOCK_K
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, num_tiles)):
        offs_w = t * (BLOCK_K // 8) + tl.arange(0, NG)[:, None] * WPG + tl.arange(0, WPG)[None, :]  # [NG, WPG]
        words = tl.load(w_ptr + offs_n[:, None, None].to(tl.int64) * stride_wn + offs_w[None, :, :], mask=mask3,
                        other=0)  # [BLOCK_N, NG, WPG] int32
        group = (offs_w * 8) // G  # [NG, WPG]; constant along WPG when GROUP > 0
        if GROUP > 0:
            gcol = t * (BLOCK_K // GROUP) + tl.arange(0, NG)
            scale = tl.load(s_ptr + offs_n[:, None] * stride_sn + gcol[None, :], mask=mask_n[:, None], other=0.0)
            if HAS_ZP:
                zw = tl.load(z_ptr + (offs_n // 8)[:, None] * stride_zn + gcol[None, :], mask=mask_n[:, None],
                             other=0)
                offset = ((((zw >> ((offs_n % 8) * 4)[:, None]) & 0xF) + 8388608).to(tl.float32))[:, :, None]
            else:
                offset = 8388616.0
        else:
            scale = tl.load(s_ptr + offs_n[:, None, None] * stride_sn + group[None, :, :], mask=mask3, other=0.0)
            if HAS_ZP:
                zw = tl.load(z_ptr + (offs_n // 8)[:, None, None] * stride_zn + group[None, :, :], mask=mask3,
                             other=0)
                offset = (((zw >> ((offs_n % 8) * 4)[:, None, None]) & 0xF) + 8388608).to(tl.float32)
            else:
                offset = 8388616.0
        dot = tl.zeros((BLOCK_N, NG, WPG), dtype=tl.float32)
        for j in tl.static_range(8):
            x = tl.load(x_ptr + offs_w * 8 + j).to(tl.float32)  # [NG, WPG]
            w = (((words >> (4 * j)) & 0xF) | MAGIC).to(tl.float32, bitcast=True) - offset
            dot += w * x[None, :, :]
        if GROUP > 0:
            acc += tl.sum(dot, axis=2) * scale.to(tl.float32)
        else:
            acc += tl.sum(dot * scale.to(tl.float32), axis=2)
    out = tl.sum(acc, axis=1)
    if SPLIT > 1:
        tl.atomic_add(out_ptr + offs_n, out, mask=mask_n)
    else:
        tl.store(out_ptr + offs_n, out.to(out_ptr.dtype.element_ty), mask=mask_n)


def w4a16_gemv_magic_triton(x, weight_packed, weight_scale, group_size, weight_zero_point=None,
                            config: tuple[int, int, int, int, int, bool] | None = None) -> torch.Tensor:
    """x [1, K] -> [1, N]. config = (BLOCK_N, BLOCK_K, num_warps, num_stages, split, grouped) for bench sweeps;
    split 0 picks about two programs per SM; grouped: one scale per group sum where the group divides the tile."""
    m, k = x.shape
    n = weight_packed.shape[0]
    if m != 1:
        raise ValueError(f"w4a16_gemv_magic_triton takes one row, got {m}")
    _check(x, weight_packed, weight_scale, group_size, multiple=8)
    x = x.contiguous()
    weight_packed, weight_scale = weight_packed.contiguous(), weight_scale.contiguous()
    zp = weight_zero_point.contiguous() if weight_zero_point is not None else weight_packed
    bn, bk, warps, stages, split, grouped = config or GEMV_MAGIC_CONFIG
    while k % bk:
        bk //= 2
    grouped = grouped and bk % group_size == 0
    num_tiles = k // bk
    if split == 0:
        split = max(1, min(num_tiles, 2 * num_sms(x.device) // triton.cdiv(n, bn)))
    split, per_split, out = _split_k(num_tiles, split, 1, n, x)
    grid = (triton.cdiv(n, bn), split)
    _w4a16_gemv_magic_kernel[grid](x, weight_packed, weight_scale, zp, out, n, k, group_size,
                                   weight_packed.stride(0), weight_scale.stride(0), zp.stride(0), per_split,
                                   HAS_ZP=weight_zero_point is not None, SPLIT=split,
                                   GROUP=group_size if grouped else 0, BLOCK_N=bn,
                                   BLOCK_K=bk, num_warps=warps, num_stages=stages)
    return out.to(x.dtype) if split > 1 else out


GEMV_MAGIC_CONFIG = (16, 1024, 4, 3, 0, True)  # the H200 sweep's best at one row (bench/RESULTS.md)
GEMV_MAX_M = 1  # one row: the CUDA-core GEMV beats the tensor-core kernels (bench/RESULTS.md); from 2 it loses


def w4a16_gemv_triton(x, weight_packed, weight_scale, group_size, weight_zero_point=None,
                      config: tuple[int, int, int, int, int] | None = None) -> torch.Tensor:
    """x [M <= 16, K] -> [M, N]. config = (BLOCK_N, BLOCK_K, num_warps, num_stages, split) for bench sweeps; split
    0 picks about two programs per SM."""
    m, k = x.shape
    n = weight_packed.shape[0]
    _check(x, weight_packed, weight_scale, group_size)
    x = x if x.stride(-1) == 1 else x.contiguous()
    weight_packed, weight_scale = weight_packed.contiguous(), weight_scale.contiguous()
    zp = weight_zero_point.contiguous() if weight_zero_point is not None else weight_packed
    bn, bk, warps, stages, split = config or (16, 512, 4, 3, 0)  # best of the H200 sweep at M = 1
    while k % bk:
        bk //= 2
    num_tiles = k // bk
    if split == 0:
        split = max(1, min(num_tiles, 2 * num_sms(x.device) // triton.cdiv(n, bn)))
    split, per_split, out = _split_k(num_tiles, split, m, n, x)
    grid = (triton.cdiv(n, bn), split)
    _w4a16_gemv_kernel[grid](x, weight_packed, weight_scale, zp, out, m, n, k, group_size, x.stride(0),
                             weight_packed.stride(0), weight_scale.stride(0), zp.stride(0), out.stride(0), per_split,
                             HAS_ZP=weight_zero_point is not None, SPLIT=split,
                             BLOCK_M=max(1, triton.next_power_of_2(m)), BLOCK_N=bn, BLOCK_K=bk, num_warps=warps,
                             num_stages=stages)
    return out.to(x.dtype) if split > 1 else out


@triton.jit
def _w4_dequant_kernel(w_ptr, s_ptr, z_ptr, out_ptr, N, K, G, stride_wn, stride_sn, stride_zn, HAS_ZP: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr):
    # packed [N, K // 8] -> 16-bit [N, K]: word w of row n expands to k = 8w .. 8w + 7
    pid_n, pid_w = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    mask = (offs_n < N)[:, None] & (offs_w < K // 8)[None, :]
    words = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_w[None, :], mask=mask, other=0)
    group = (offs_w * 8) // G
    scale = tl.load(s_ptr + offs_n[:, None] * stride_sn + group[None, :], mask=mask, other=0.0).to(tl.float32)
    q = (words[:, :, None] >> (tl.arange(0, 8) * 4)[None, None, :]) & 0xF
    q = q - 8
    if HAS_ZP:
        zw = tl.load(z_ptr + (offs_n // 8)[:, None] * stride_zn + group[None, :], mask=mask, other=0)
        q = q - (((zw >> ((offs_n % 8) * 4)[:, None]) & 0xF) - 8)[:, :, None]
    w = q.to(tl.float32) * scale[:, :, None]
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
    """Many rows (prefill, large decode batches): the GEMM is compute-bound, so dequantize the weight to 16 bits
    once and use the vendor GEMM; the extra weight traffic is small next to the matmul at these sizes."""
    _check(x, weight_packed, weight_scale, group_size)
    w = dequant_w4_triton(weight_packed.contiguous(), weight_scale.contiguous(), group_size,
                          None if weight_zero_point is None else weight_zero_point.contiguous(), x.dtype)
    return x @ w.t()


def _check(x, weight_packed, weight_scale, group_size, multiple: int = 16) -> None:
    # shared argument checks of every W4A16 entry point; `multiple` is what the kernel's group size must divide by
    m, k = x.shape
    n = weight_packed.shape[0]
    if weight_packed.dtype != torch.int32 or weight_packed.shape[1] * 8 != k:
        raise ValueError(f"weight_packed must be int32 [N, {k // 8}], got {weight_packed.dtype} "
                         f"{tuple(weight_packed.shape)}")
    if k % group_size or group_size % multiple:
        raise ValueError(f"group_size must divide K={k} and be a multiple of {multiple}, got {group_size}")
    if weight_scale.shape != (n, k // group_size):
        raise ValueError(f"weight_scale must be [{n}, {k // group_size}], got {tuple(weight_scale.shape)}")


# 2..8 rows: the planes kernel with 128-wide tiles and ~4 programs per SM beat the tile kernel by 5-12 % in the H200
# sweep (4096x4096 and 4096x14336, g128); at 16 rows the tile kernel is faster
PLANES_MAX_M = 8
PLANES_CONFIG = (16, 128, 128, 4, 3, 4)
DEQUANT_MIN_M = 64  # from this many rows on, dequantize + vendor GEMM (compute-bound sizes; bench/RESULTS.md)


def w4a16_gemm(x, weight_packed, weight_scale, group_size, weight_zero_point=None) -> torch.Tensor:
    if on_cuda(x, weight_packed, weight_scale, weight_zero_point):
        m = x.shape[0]
        if m <= GEMV_MAX_M:
            return w4a16_gemv_magic_triton(x, weight_packed, weight_scale, group_size, weight_zero_point)
        if m >= DEQUANT_MIN_M:
            return w4a16_dequant_mm_triton(x, weight_packed, weight_scale, group_size, weight_zero_point)
        if m <= PLANES_MAX_M and group_size % 128 == 0:
            return w4a16_gemm_planes_triton(x, weight_packed, weight_scale, group_size, weight_zero_point,
                                            config=PLANES_CONFIG)
        return w4a16_gemm_triton(x, weight_packed, weight_scale, group_size, weight_zero_point)
    return w4a16_gemm_ref(x, weight_packed, weight_scale, group_size, weight_zero_point)
