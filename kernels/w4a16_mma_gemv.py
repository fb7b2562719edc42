"""W4A16 GEMV for decode row counts on the tensor cores, on the repacked layout (kvant.kernels.w4a16_layout), with
no shared-memory round trip for the weight: each thread loads VEC consecutive words of a weight row (one 16-byte load
at g128) and dequantizes them straight into the registers of the MMA's A operand, a shift, one LOP3 and one packed
16-bit subtract per pair of values, no int->float conversion. Why that works: the MMA gives thread (g, t) of a quad the
k columns {2t, 2t + 1, 2t + 8, 2t + 9} of each 16-wide k step, and a dot product does not care which real k a column
stands for, so column kk of a block is given the real k the thread already holds:

    kk = lohi + 2 t + 8 pair + 32 wr  <->  real k = 8 (VEC t + wr) + 2 pair + lohi

(word VEC t + wr of the block, `pair` = nibbles 4 pair and 16 + 4 pair, lohi = low or high half); x is loaded as int32
pairs of 16-bit values and put in the same order. The rows are relabelled too (`_mma_rows`), so that the load's natural
layout (8 lanes, then warps, then registers along rows) reads as the MMA's (8 lanes, one register bit, warps).
A block is 32 VEC columns, VEC = min(4, G / 32) words per thread, so every block lies in one group and its fp32 MMA
result is scaled once per row; hence a group of at least 32 (at g32, one word per thread, the load lays out
differently and the weight does pass through shared memory). The tokens are the MMA's narrow side, padded to 16
(TOK = 16, 32, 64, 128 or 256 columns); more rows than one token tile holds run as several tiles, launched next to
each other so that the ones that share a weight tile read it from L2. SCALE_IN scales the dequantized block in 16
bits (the weight rounded once, as a dequantizing GEMM rounds it) so that the MMAs accumulate into one accumulator: no
fp32 partial per block, 40-odd registers fewer, which is what lets 256 tokens fit (ptxas, sm_90: 255 registers, no
spills, at BLOCK_N 128 with 8 warps and 3 stages; without SCALE_IN it spills). Each block's scales (and zeros) are
loaded a block ahead, with its words: loaded in the step that uses them (as until 2026-12-07), they cost every step
a memory round trip that nothing hid (sm_90 SASS: the load just before the step's fence, its use after the MMA).
Split-K is reduced in-kernel (kvant.kernels.splitk) on the real rows only. With SILU the kernel takes the MLP's
gate_up output and forms silu(gate) * up as it loads x, rounded to 16 bits as kvant.kernels.activation's kernel
rounds it, so down_proj(silu_and_mul(gate_up)) is one launch with the same result."""
import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import interpreted, num_sms, pdl_enter, pdl_launch
from kvant.kernels.splitk import split_count, splitk_buffers, store_or_reduce
from kvant.kernels.w4a16_layout import check_repacked, group_scale_zero, magic_zero, packed_zero, zero_pairs

MAX_TILE = 256  # the MMA's narrow side (n of m64nNk16): the most tokens one program holds
# Registers per thread (ptxas for sm_90, bf16 g128, prefetch on, no spills unless said): 64 tokens: BLOCK_N 64 with 4
# warps 184, 128 with 8 warps 151, 256 with 8 warps 255 and spills; 128 tokens: 128 with 8 warps 246, 64 with 4 warps
# spills. So past 64 rows only BLOCK_N 128 with 8 warps is offered (ROWS128_CONFIGS).
ROWS128_CONFIGS = [(128, 8, 1, 2, True), (128, 8, 1, 1, True), (128, 8, 3, 1, False)]
# the same with the block scaled in 16 bits, and in 64-token tiles (two or three programs per SM)
ROWS128_MORE = [(*c, False, True) for c in ROWS128_CONFIGS] + [(128, 8, 3, 1, False, False, True, 64),
                                                             (64, 4, 3, 1, False, False, True, 64)]
# 129-256 rows: SCALE_IN only. One 256-token tile (3 stages: 208 KB of shared memory for x's block, 1 stage 128 KB;
# 255 registers) or 64-token tiles (BLOCK_N 128 with 8 warps: 128 registers, 64 KB; 64 with 4: 132, 56 KB), which
# let two or three programs share an SM
ROWS256_CONFIGS = [(128, 8, 3, 1, False, False, True), (128, 8, 1, 1, False, False, True),
                   (128, 8, 3, 1, False, False, True, 64), (64, 4, 3, 1, False, False, True, 64),
                   (128, 8, 3, 1, False, False, True, 128)]
# (BLOCK_N, num_warps, num_stages, waves, prefetch[, pair[, scale_in[, tokens]]]): prefetch (True = 1, or 2) loads
# the next block's (or next two blocks') words and x into registers while this block computes (for num_stages 1);
# num_stages > 1 lets Triton's pipeliner stage them in shared memory; pair steps two blocks at a time, the next pair
# loaded together; tokens (a power of two, 16..256; 0 = up to MAX_TILE) is the token tile: a smaller tile uses fewer
# registers, so that programs share an SM and one dequantizes while another's MMA runs (Triton waits for each wgmma
# whose register operand the loop makes).
# bench/w4a16_gemv_sweep.py times them; a 64-row tile keeps a thread at 8 words per block.
MMA_GEMV_CONFIG = (64, 4, 1, 4, True)  # the H100 sweeps' best at 17-64 rows on all but gate_up (bench/RESULTS.md)


def default_config(m: int, n: int, sms: int = 132) -> tuple:
    """The config for m rows and N output columns, from the H100 sweeps of 2026-12-07 (bench/RESULTS.md) on
    Llama-3.1-8B's g128 shapes: pairs of blocks, one warpgroup, four waves at <= 16 rows; one warpgroup and four waves
    at 17-64 rows, except for a weight so wide (gate_up) that 256-column tiles still give every other SM one, which
    reads x from L2 a quarter as often; past 64 rows 64-token tiles, each block scaled in 16 bits, Triton's
    shared-memory pipeline (the fastest INT4 kernel at 128 and 256 rows on qkv, o and down but down at 256, where
    it was within 5 %)."""
    if m <= 16:  # pairs of blocks (H100 2026-12-07: gate_up at one row 26.4 against 35.2 us)
        return 64, 4, 1, 4, True, True
    if m <= 64:
        return (256, 8, 1, 1, True) if m > 32 and triton.cdiv(n, 256) >= sms // 2 else MMA_GEMV_CONFIG
    return ROWS256_CONFIGS[2]


@triton.jit
def _dequant(w3, zero, zero2, SHIFT: tl.constexpr, BF16: tl.constexpr, UPCAST: tl.constexpr):
    # nibble pair SHIFT // 4 of each word as [..., 2] values u - zero (exact small integers). On the GPU the subtract
    # is one packed FMA (zero2) with or without zero points: the compiler's own form of the symmetric subtract swapped
    # the halves of every pair before and after it (two PRMTs per pair; sm_90 SASS, 2026-12-07)
    if not UPCAST:
        return _halves(zero_pairs(w3, zero2, SHIFT, BF16), BF16, UPCAST)
    magic = ((w3 >> SHIFT) & 0x000F000F) | (0x43004300 if BF16 else 0x64006400)  # two 16-bit floats MAGIC + u
    return _halves(magic, BF16, UPCAST) - zero


@triton.jit
def _halves(v, BF16: tl.constexpr, UPCAST: tl.constexpr):
    # int32 [...] -> [..., 2]: its low and high 16-bit floats; UPCAST (the interpreter, whose bf16 arithmetic is
    # wrong) gives the same bf16 values as fp32
    if UPCAST and BF16:
        return tl.join((v << 16).to(tl.float32, bitcast=True), (v & -65536).to(tl.float32, bitcast=True))
    elif BF16:
        return tl.join(v.to(tl.int16).to(tl.bfloat16, bitcast=True),
                       (v >> 16).to(tl.int16).to(tl.bfloat16, bitcast=True))
    else:
        return tl.join(v.to(tl.int16).to(tl.float16, bitcast=True), (v >> 16).to(tl.int16).to(tl.float16, bitcast=True))


@triton.jit
def _bits16(v, BF16: tl.constexpr):
    # fp32 -> the 16-bit float's bits (round to nearest even) in the low half of an int32; bf16 in integer
    # arithmetic, which the interpreter gets right
    if BF16:
        b = v.to(tl.int32, bitcast=True)
        return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF
    else:
        return v.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit
def _silu_mul_pairs(gw, uw, BF16: tl.constexpr, UPCAST: tl.constexpr):
    # int32 pairs of gate and of up values -> int32 pairs of silu(gate) * up in fp32, as kvant.kernels.activation
    g = _halves(gw, BF16, UPCAST).to(tl.float32)
    y = g * tl.sigmoid(g) * _halves(uw, BF16, UPCAST).to(tl.float32)
    lo, hi = tl.split(y)
    return _bits16(lo, BF16) | (_bits16(hi, BF16) << 16)


@triton.jit
def _mma_columns(p0, p1, p2, p3, VEC: tl.constexpr):
    # pair tensors [R, t, wr, lohi] of pairs 0..3 -> [R, 32 VEC], column kk = lohi + 2 t + 8 pair + 32 wr
    q = tl.join(tl.join(p0, p1), tl.join(p2, p3))  # [R, t, wr, lohi, pair % 2, pair // 2]
    q = tl.permute(q, (0, 2, 5, 4, 1, 3))  # [R, wr, pair // 2, pair % 2, t, lohi]
    return tl.reshape(q, (q.shape[0], 32 * VEC))


@triton.jit
def _mma_rows(t, WARPS: tl.constexpr):
    # [BN, C]: row ((rep 2 + b) WARPS + w) 8 + l -> row ((rep WARPS + w) 2 + b) 8 + l, which moves the lowest register
    # bit of a blocked layout's rows (8 lanes x WARPS warps, then registers) to row bit 3, where the MMA keeps it
    BN: tl.constexpr = t.shape[0]
    C: tl.constexpr = t.shape[1]
    t = tl.reshape(t, (BN // (16 * WARPS), 2, WARPS, 8, C))
    return tl.reshape(tl.permute(t, (0, 2, 1, 3, 4)), (BN, C))


@triton.jit
def _w_block(w_ptrs, blk, BW: tl.constexpr, mask_n):
    # block blk's words [BLOCK_N, BW] of the program's rows, read once and streamed past the caches
    return tl.load(w_ptrs + blk * BW, mask=mask_n[:, None], other=0, eviction_policy="evict_first")


@triton.jit
def _x_block(x_ptrs, offset, UP_WORDS, mask_m, BF16: tl.constexpr, UPCAST: tl.constexpr, SILU: tl.constexpr):
    # x's int32 pairs of one block [TOK, 4 BW]; SILU: silu(gate) * up from gate_up's two halves
    xw = tl.load(x_ptrs + offset, mask=mask_m[:, None], other=0)
    if SILU:
        xw = _silu_mul_pairs(xw, tl.load(x_ptrs + UP_WORDS + offset, mask=mask_m[:, None], other=0), BF16, UPCAST)
    return xw


@triton.jit
def _sz_block(s_ptr, z_ptr, blk, N, offs_r, mask_r, HAS_ZP: tl.constexpr, GROUP: tl.constexpr, VEC: tl.constexpr):
    # block blk's group scale and zero code of each A row [BLOCK_N] (w4a16_layout.group_scale_zero)
    return group_scale_zero(s_ptr, z_ptr, blk * 32 * VEC, GROUP, N, offs_r, mask_r, HAS_ZP)


@triton.jit
def _block_part(acc, words, xw, s, z, live, x_dtype: tl.constexpr, HAS_ZP: tl.constexpr, BF16: tl.constexpr,
                UPCAST: tl.constexpr, VEC: tl.constexpr, BLOCK_N: tl.constexpr, TOK: tl.constexpr,
                WARPS: tl.constexpr, SCALE_IN: tl.constexpr):
    # a block's contribution [BLOCK_N, TOK] added to acc (nothing where not live): its words [BLOCK_N, 4 VEC]
    # dequantized into the MMA's A operand, x's int32 pairs [TOK, 16 VEC] into B, scaled per row (s, z: _sz_block's)
    scale = tl.where(live, s.to(tl.float32), 0.0)
    zero = magic_zero(z, HAS_ZP, BF16)[:, None, None]  # [BLOCK_N, t, wr]
    if not UPCAST or not BF16:
        zero = zero.to(x_dtype)
    zero2 = zero  # only the packed path reads it
    if not UPCAST:
        zero2 = packed_zero(zero, BF16)
    zero = zero[:, :, :, None]
    w3 = tl.reshape(_mma_rows(words, WARPS), (BLOCK_N, 4, VEC))
    a = _mma_columns(_dequant(w3, zero, zero2, 0, BF16, UPCAST),
                     _dequant(w3, zero, zero2, 4, BF16, UPCAST),
                     _dequant(w3, zero, zero2, 8, BF16, UPCAST),
                     _dequant(w3, zero, zero2, 12, BF16, UPCAST), VEC)  # [BLOCK_N, 32 VEC]
    # x pairs [TOK, t, wr, pair // 2, pair % 2] -> [TOK, t, wr, pair % 2, pair // 2, lohi] -> A's column order
    xh = _halves(tl.permute(tl.reshape(xw, (TOK, 4, VEC, 2, 2)), (0, 1, 2, 4, 3)), BF16, UPCAST)
    xt = tl.trans(tl.reshape(tl.permute(xh, (0, 2, 4, 3, 1, 5)), (TOK, 32 * VEC)))  # [32 VEC, TOK]
    if UPCAST:
        a = a.to(tl.float32)
        xt = xt.to(tl.float32)
    if SCALE_IN:
        return tl.dot((a * scale.to(a.dtype)[:, None]).to(xt.dtype), xt, acc)
    return acc + tl.dot(a, xt) * scale[:, None]


@triton.jit
def _mma_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, stride_xw, stride_wn, stride_om,
                     BLOCKS_PER_SPLIT, UP_WORDS, HAS_ZP: tl.constexpr, SPLIT: tl.constexpr, BF16: tl.constexpr,
                     UPCAST: tl.constexpr, GROUP: tl.constexpr, VEC: tl.constexpr, BLOCK_N: tl.constexpr,
                     ROWS: tl.constexpr, WARPS: tl.constexpr, PREFETCH: tl.constexpr, SILU: tl.constexpr = False,
                     PDL: tl.constexpr = False, PAIR: tl.constexpr = False, SCALE_IN: tl.constexpr = False):
    # acc [BLOCK_N, TOK] = W rows @ x^T for token tile pid_m of ROWS tokens (the next power of two >= M, or the
    # config's tile), padded to TOK = max(16, ROWS) (zeros: their columns of acc stay exactly 0); SILU: x is gate_up,
    # its up half UP_WORDS int32 pairs after the gate half
    TOK: tl.constexpr = 16 if ROWS < 16 else ROWS
    BW: tl.constexpr = 4 * VEC  # words per row in a block
    pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)  # token tiles of a weight tile adjacent
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    offs_r = tl.reshape(_mma_rows(tl.reshape(offs_n, (BLOCK_N, 1)), WARPS), (BLOCK_N,))  # the A operand's rows
    mask_r = offs_r < N
    offs_m = pid_m * ROWS + tl.arange(0, TOK)
    mask_m = (tl.arange(0, TOK) < ROWS) & (offs_m < M)
    # [BLOCK_N, BW]; contiguous runs of VEC only, so that the load's layout puts 4 lanes along a row at any VEC
    cols = tl.max_contiguous(tl.arange(0, BW), VEC)
    w_ptrs = w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + cols[None, :]
    # x as int32 pairs of 16-bit values: pair j of a block is word j // 4's nibble pair j % 4
    x_ptrs = (x_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + offs_m[:, None] * stride_xw
              + tl.arange(0, 4 * BW)[None, :])  # [TOK, 4 BW]
    acc = tl.zeros((BLOCK_N, TOK), dtype=tl.float32)
    first = pid_k * BLOCKS_PER_SPLIT
    last = tl.minimum(first + BLOCKS_PER_SPLIT, K // (32 * VEC))
    if PAIR:  # two blocks per step, the next step's pair loaded together: each row's two 64-byte halves of a
        # 128-byte line are asked for at once (the last step's second block, past `last`, is the last block again and
        # counts zero)
        b1 = tl.minimum(first + 1, last - 1)
        wa = _w_block(w_ptrs, first, BW, mask_n)
        wb = _w_block(w_ptrs, b1, BW, mask_n)
        sa, za = _sz_block(s_ptr, z_ptr, first, N, offs_r, mask_r, HAS_ZP, GROUP, VEC)
        sb, zb = _sz_block(s_ptr, z_ptr, b1, N, offs_r, mask_r, HAS_ZP, GROUP, VEC)
        pdl_enter(PDL)
        xa = _x_block(x_ptrs, first * (4 * BW), UP_WORDS, mask_m, BF16, UPCAST, SILU)
        xb = _x_block(x_ptrs, b1 * (4 * BW), UP_WORDS, mask_m, BF16, UPCAST, SILU)
        for b in range(first, last, 2):
            cwa, cwb, cxa, cxb, csa, cza, csb, czb = wa, wb, xa, xb, sa, za, sb, zb
            na, nb = tl.minimum(b + 2, last - 1), tl.minimum(b + 3, last - 1)
            wa = _w_block(w_ptrs, na, BW, mask_n)
            wb = _w_block(w_ptrs, nb, BW, mask_n)
            sa, za = _sz_block(s_ptr, z_ptr, na, N, offs_r, mask_r, HAS_ZP, GROUP, VEC)
            sb, zb = _sz_block(s_ptr, z_ptr, nb, N, offs_r, mask_r, HAS_ZP, GROUP, VEC)
            xa = _x_block(x_ptrs, na * (4 * BW), UP_WORDS, mask_m, BF16, UPCAST, SILU)
            xb = _x_block(x_ptrs, nb * (4 * BW), UP_WORDS, mask_m, BF16, UPCAST, SILU)
            acc = _block_part(acc, cwa, cxa, csa, cza, b < last, x_ptr.dtype.element_ty, HAS_ZP, BF16, UPCAST, VEC,
                              BLOCK_N, TOK, WARPS, SCALE_IN)
            acc = _block_part(acc, cwb, cxb, csb, czb, b + 1 < last, x_ptr.dtype.element_ty, HAS_ZP, BF16, UPCAST,
                              VEC, BLOCK_N, TOK, WARPS, SCALE_IN)
    else:
        # words and x PREFETCH blocks ahead (0, 1 or 2) in registers, the scales (and zeros) max(PREFETCH, 1) ahead;
        # the weight and its scales (never written by an earlier kernel) are read before the PDL wait, x after it.
        # Near the end the reads clamp to the last block (cached) rather than mask.
        b1 = tl.minimum(first + 1, last - 1)
        s_next, z_next = _sz_block(s_ptr, z_ptr, first, N, offs_r, mask_r, HAS_ZP, GROUP, VEC)
        if PREFETCH:
            words_next = _w_block(w_ptrs, first, BW, mask_n)
        if PREFETCH >= 2:
            words_next2 = _w_block(w_ptrs, b1, BW, mask_n)
            s_next2, z_next2 = _sz_block(s_ptr, z_ptr, b1, N, offs_r, mask_r, HAS_ZP, GROUP, VEC)
        pdl_enter(PDL)
        if PREFETCH:
            xw_next = _x_block(x_ptrs, first * (4 * BW), UP_WORDS, mask_m, BF16, UPCAST, SILU)
        if PREFETCH >= 2:
            xw_next2 = _x_block(x_ptrs, b1 * (4 * BW), UP_WORDS, mask_m, BF16, UPCAST, SILU)
        for b in range(first, last):
            s, z = s_next, z_next
            if PREFETCH >= 2:
                words, xw = words_next, xw_next
                words_next, xw_next, s_next, z_next = words_next2, xw_next2, s_next2, z_next2
                nb = tl.minimum(b + 2, last - 1)
                words_next2 = _w_block(w_ptrs, nb, BW, mask_n)
                s_next2, z_next2 = _sz_block(s_ptr, z_ptr, nb, N, offs_r, mask_r, HAS_ZP, GROUP, VEC)
                xw_next2 = _x_block(x_ptrs, nb * (4 * BW), UP_WORDS, mask_m, BF16, UPCAST, SILU)
            else:
                nb = tl.minimum(b + 1, last - 1)
                s_next, z_next = _sz_block(s_ptr, z_ptr, nb, N, offs_r, mask_r, HAS_ZP, GROUP, VEC)
                if PREFETCH:
                    words, xw = words_next, xw_next
                    words_next = _w_block(w_ptrs, nb, BW, mask_n)
                    xw_next = _x_block(x_ptrs, nb * (4 * BW), UP_WORDS, mask_m, BF16, UPCAST, SILU)
                else:
                    words = _w_block(w_ptrs, b, BW, mask_n)
                    xw = _x_block(x_ptrs, b * (4 * BW), UP_WORDS, mask_m, BF16, UPCAST, SILU)
            acc = _block_part(acc, words, xw, s, z, b < last, x_ptr.dtype.element_ty, HAS_ZP, BF16, UPCAST, VEC,
                              BLOCK_N, TOK, WARPS, SCALE_IN)
    out = tl.sum(tl.reshape(acc, (BLOCK_N, TOK // ROWS, ROWS)), axis=1)  # [BLOCK_N, ROWS]: columns >= M are 0
    offs_o = pid_m * ROWS + tl.arange(0, ROWS)
    store_or_reduce(out, out_ptr + offs_o[None, :] * stride_om + offs_r[:, None],
                    mask_r[:, None] & (offs_o < M)[None, :], ws_ptr, cnt_ptr, pid_n * tl.num_programs(0) + pid_m, pid_k,
                    SPLIT, BLOCK_N, ROWS)


def w4a16_mma_gemv_triton(x, qweight, scales, group_size, zeros=None, config=None,
                          silu_mul: bool = False) -> torch.Tensor:
    """x [M, K] -> [M, N] for M >= 1 (token tiles of up to MAX_TILE); group_size a power of two >= 32; config =
    MMA_GEMV_CONFIG's fields (and the optional ones above), for bench sweeps and the tuner (BLOCK_N a multiple of 16
    num_warps: 64 rows per warpgroup); silu_mul: x is gate_up [M, 2K] (gate half, then up half) and the GEMM runs on
    silu(gate) * up."""
    k = qweight.shape[1] * 8
    if silu_mul and (x.dim() != 2 or x.shape[1] != 2 * k):
        raise ValueError(f"with silu_mul, x must be gate_up [M, {2 * k}], got {tuple(x.shape)}")
    check_repacked(x[:, :k] if silu_mul else x, qweight, scales, group_size, zeros, sixteen_bit=True)
    m = x.shape[0]
    n = qweight.shape[0]
    if m < 1:
        raise ValueError(f"w4a16_mma_gemv_triton takes at least one row, got {m}")
    if group_size < 32 or group_size & (group_size - 1):
        raise ValueError(f"w4a16_mma_gemv_triton needs a power-of-two group size >= 32, got {group_size}")
    bn, warps, stages, waves, prefetch, *extra = config or default_config(m, n, num_sms(x.device))
    pair, scale_in, tokens = [*extra, False, False, 0][:3]
    if tokens and (tokens < 16 or tokens > MAX_TILE or tokens & (tokens - 1)):
        raise ValueError(f"the token tile must be a power of two in 16..{MAX_TILE} (or 0), got {tokens}")
    if bn % (16 * warps) or bn & (bn - 1):
        raise ValueError(f"BLOCK_N must be a power of two and a multiple of 16 * num_warps, got {bn} with {warps} "
                         "warps")
    x = x.contiguous()
    if x.data_ptr() % 4:
        raise ValueError("x must be 4-byte aligned (the kernel reads it as int32 pairs)")
    vec = min(4, group_size // 32)
    rows = triton.next_power_of_2(min(m, tokens or MAX_TILE))
    tiles = triton.cdiv(m, rows)
    split, per_split = split_count(k // (32 * vec), tiles * triton.cdiv(n, bn), num_sms(x.device), waves)
    ws, cnt = splitk_buffers(x.device, tiles * triton.cdiv(n, bn), split, bn * rows)
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    _mma_gemv_kernel[(tiles, triton.cdiv(n, bn), split)](
        x, qweight, scales, zeros if zeros is not None else scales, out, ws, cnt, m, n, k, x.stride(0) // 2,
        qweight.stride(0), out.stride(0), per_split, k // 2, HAS_ZP=zeros is not None, SPLIT=split,
        BF16=x.dtype == torch.bfloat16, UPCAST=interpreted(_mma_gemv_kernel), GROUP=group_size, VEC=vec, BLOCK_N=bn,
        ROWS=rows, WARPS=warps, PREFETCH=int(prefetch), SILU=silu_mul, PAIR=bool(pair), SCALE_IN=bool(scale_in),
        num_warps=warps, num_stages=stages,
        **pdl_launch(x.device))
    return out
