"""The W4A16 layout kvant's kernels read, made once at load from compressed-tensors' tensors (and back, exactly):

| tensor       | compressed-tensors (on disk)                  | repacked (in memory)                                 |
|--------------|-----------------------------------------------|------------------------------------------------------|
| codes        | `weight_packed` int32 [N, K // 8], element j  | `qweight` int32 [N, K // 8], nibble position p holds |
|              | of a word in bits 4j..4j+3, offset binary     | element PERM[p]: bits 4i and 16 + 4i hold elements   |
|              | (u = v + 8)                                   | 2i and 2i + 1, so one AND/OR makes both 16-bit halves|
| scales       | `weight_scale` [N, K // G]                    | `scales` [K // G, N] (a tile's columns contiguous)   |
| zero points  | `weight_zero_point` int32 [N // 8, K // G],   | `zeros` [K // G, N] in the scale dtype: the nibble   |
|              | signed int4 packed 8 rows per word            | code of zero, 8 + zp (None when symmetric: 8)        |

Dequantized weight: w[n, k] = (u[n, k] - zero[k // G, n]) * scale[k // G, n]."""
import torch
import triton
import triton.language as tl

from kvant.kernels.int4_pack import pack_int4, unpack_int4

PERM = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble position p of a repacked word holds element PERM[p] of its 8
INVERSE = tuple(PERM.index(e) for e in range(8))  # element e sits at nibble position INVERSE[e]
# 16-bit floats whose low mantissa bits take a nibble u to give MAGIC + u exactly: bf16 128.0, fp16 1024.0
MAGIC16 = {torch.bfloat16: (0x4300, 128.0), torch.float16: (0x6400, 1024.0)}


# ---- repack and its inverse (torch, once per layer at load) ----
def _permute_nibbles(words: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    # nibble position p of the result takes position order[p] of `words`
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=words.device)
    nib = (words[..., None] >> shifts) & 0xF  # [..., 8] by position
    nib = nib[..., list(order)]
    return (nib << shifts).sum(dim=-1, dtype=torch.int32)


def repack_w4(weight_packed, weight_scale, group_size: int, weight_zero_point=None):
    """compressed-tensors tensors -> (qweight, scales, zeros) of kvant's layout (the table above)."""
    n, k = weight_packed.shape[0], weight_packed.shape[1] * 8
    if weight_packed.dtype != torch.int32 or k % group_size or weight_scale.shape != (n, k // group_size):
        raise ValueError(f"repack_w4 needs int32 [N, K // 8] codes and [N, K // G] scales, got "
                         f"{weight_packed.dtype} {tuple(weight_packed.shape)}, {tuple(weight_scale.shape)}, "
                         f"G={group_size}")
    qweight = _permute_nibbles(weight_packed, PERM).contiguous()
    scales = weight_scale.t().contiguous()
    zeros = None
    if weight_zero_point is not None:
        zp = unpack_int4(weight_zero_point.t().contiguous(), n)  # [K // G, N] signed
        zeros = (zp.to(torch.float32) + 8).to(weight_scale.dtype).contiguous()
    return qweight, scales, zeros


def unrepack_w4(qweight, scales, zeros=None):
    """The exact inverse of repack_w4: (weight_packed, weight_scale, weight_zero_point or None)."""
    weight_packed = _permute_nibbles(qweight, INVERSE).contiguous()
    weight_zero_point = None
    if zeros is not None:
        zp = zeros.to(torch.float32).round().to(torch.int8) - 8  # [K // G, N]
        pad = (-zp.shape[1]) % 8
        zp = torch.nn.functional.pad(zp, (0, pad))
        weight_zero_point = pack_int4(zp).t().contiguous()  # [N // 8, K // G]
    return weight_packed, scales.t().contiguous(), weight_zero_point


# ---- torch reference on the repacked layout ----
def dequant_w4_repacked_ref(qweight, scales, group_size: int, zeros=None) -> torch.Tensor:
    # -> fp32 [N, K]
    shifts = torch.tensor([4 * p for p in INVERSE], dtype=torch.int32, device=qweight.device)  # element order
    u = ((qweight[..., None] >> shifts) & 0xF).reshape(qweight.shape[0], -1).float()  # [N, K] codes 0..15
    zero = 8.0 if zeros is None else zeros.float().t().repeat_interleave(group_size, dim=1)
    return (u - zero) * scales.float().t().repeat_interleave(group_size, dim=1)


def w4a16_repacked_gemm_ref(x, qweight, scales, group_size: int, zeros=None) -> torch.Tensor:
    # x [M, K] 16-bit -> [M, N] in x.dtype
    return (x.float() @ dequant_w4_repacked_ref(qweight, scales, group_size, zeros).t()).to(x.dtype)


def check_repacked(x, qweight, scales, group_size: int, zeros, sixteen_bit: bool = False) -> None:
    # sixteen_bit: the kernel computes with 16-bit activations (the GEMV and the tensor-core tile)
    m, k = x.shape
    n = qweight.shape[0]
    if sixteen_bit and x.dtype not in MAGIC16:
        raise ValueError(f"x must be bfloat16 or float16, got {x.dtype}")
    if qweight.dtype != torch.int32 or qweight.shape[1] * 8 != k:
        raise ValueError(f"qweight must be int32 [N, {k // 8}], got {qweight.dtype} {tuple(qweight.shape)}")
    if k % group_size or group_size % 8:
        raise ValueError(f"group_size must divide K={k} and be a multiple of 8, got {group_size}")
    if scales.shape != (k // group_size, n) or (zeros is not None and zeros.shape != scales.shape):
        raise ValueError(f"scales (and zeros) must be [{k // group_size}, {n}], got {tuple(scales.shape)}")


# ---- the in-register dequantization every repacked kernel shares ----
@triton.jit
def zero_pairs(words, zero2, SHIFT: tl.constexpr, BF16: tl.constexpr):
    # ((words >> SHIFT) & 0x000F000F) | magic (two 16-bit floats MAGIC + u), plus zero2 (-(MAGIC + zero code) twice,
    # int32 bits) in one packed FMA by 1.0 (sm_80 has no bf16x2 subtract): exact, since the results are small
    # integers. Written out because the compiler re-packs a per-row zero for every pair (one PRMT each)
    if BF16:
        return tl.inline_asm_elementwise(
            f"{{.reg .b32 t, one; mov.b32 one, 0x3f803f80; shr.u32 t, $1, {SHIFT}; "
            "lop3.b32 t, t, 0x000f000f, 0x43004300, 0xea; fma.rn.bf16x2 $0, t, one, $2;}", "=r,r,r", [words, zero2],
            dtype=tl.int32, is_pure=True, pack=1)
    else:
        return tl.inline_asm_elementwise(
            f"{{.reg .b32 t, one; mov.b32 one, 0x3c003c00; shr.u32 t, $1, {SHIFT}; "
            "lop3.b32 t, t, 0x000f000f, 0x64006400, 0xea; fma.rn.f16x2 $0, t, one, $2;}", "=r,r,r", [words, zero2],
            dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def group_scale_zero(s_ptr, z_ptr, k0, G, N, offs_n, mask_n, HAS_ZP: tl.constexpr):
    # the group scale of each weight row offs_n [R] at K offset k0, as stored, and its zero code (the scale again
    # where symmetric: unread). The kernels load these a step ahead of their use, with the step's words: 2-byte loads
    # that Triton's pipeline does not stage, and loaded in the step that used them they cost it a memory round trip
    group = k0 // G
    scale = tl.load(s_ptr + group * N + offs_n, mask=mask_n, other=0.0)
    zero = scale
    if HAS_ZP:
        zero = tl.load(z_ptr + group * N + offs_n, mask=mask_n, other=0.0)
    return scale, zero


@triton.jit
def magic_zero(zero, HAS_ZP: tl.constexpr, BF16: tl.constexpr):
    # group_scale_zero's zero code [R] -> MAGIC + code of zero in fp32 (8 where symmetric), what dequant_words takes
    MAGIC: tl.constexpr = 128.0 if BF16 else 1024.0
    if HAS_ZP:
        return zero.to(tl.float32) + MAGIC
    return tl.full(zero.shape, MAGIC + 8.0, tl.float32)


@triton.jit
def packed_zero(zero, BF16: tl.constexpr):
    # fp32 MAGIC + zero code (any shape) -> int32 bits of -(MAGIC + zero) as a 16-bit float, in both halves
    z = (-zero).to(tl.bfloat16 if BF16 else tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return z | (z << 16)


@triton.jit
def _pair(words, zero, zero2, I: tl.constexpr, BF16: tl.constexpr, UPCAST: tl.constexpr):
    # elements 2I (low half) and 2I + 1 (high half) of each word as [R, W, 2], value u - zero; on the GPU one packed
    # FMA per pair (zero2 = packed_zero(zero)): the compiler's form of the subtract swapped the halves of every pair
    # before and after it (two PRMTs per pair in the sm_90 SASS, 2026-12-07)
    if UPCAST:  # the interpreter, whose bf16 arithmetic is wrong: the same bf16 values as fp32 bit patterns
        v = ((words >> (4 * I)) & 0x000F000F) | (0x43004300 if BF16 else 0x64006400)
        if BF16:
            lo = (v << 16).to(tl.float32, bitcast=True) - zero
            hi = (v & -65536).to(tl.float32, bitcast=True) - zero
        else:
            lo = v.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32) - zero
            hi = (v >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32) - zero
    else:
        dt: tl.constexpr = tl.bfloat16 if BF16 else tl.float16
        v = zero_pairs(words, zero2, 4 * I, BF16)
        lo = v.to(tl.int16).to(dt, bitcast=True)
        hi = (v >> 16).to(tl.int16).to(dt, bitcast=True)
    return tl.join(lo, hi)


@triton.jit
def dequant_words(words, zero, BF16: tl.constexpr, UPCAST: tl.constexpr):
    """words int32 [R, W] (repacked) -> [R, 8 W] in k order, value u - zero: per pair of values, a shift and one
    LOP3 build two 16-bit floats MAGIC + u and one packed FMA subtracts `zero` (MAGIC + code of zero, fp32,
    broadcastable to [R, W]) exactly. UPCAST (the interpreter, whose bf16 arithmetic is wrong) forms the same values
    in fp32 (bf16 as fp32 bit patterns)."""
    zero2 = zero
    if not UPCAST:
        zero2 = packed_zero(zero, BF16)
    w = tl.join(tl.join(_pair(words, zero, zero2, 0, BF16, UPCAST), _pair(words, zero, zero2, 1, BF16, UPCAST)),
                tl.join(_pair(words, zero, zero2, 2, BF16, UPCAST), _pair(words, zero, zero2, 3, BF16, UPCAST)))
    # [R, W, lohi, i % 2, i // 2] -> [R, W, i // 2, i % 2, lohi]: k - 8w = 4 (i // 2) + 2 (i % 2) + lohi
    w = tl.permute(w, (0, 1, 4, 3, 2))
    return tl.reshape(w, (words.shape[0], words.shape[1] * 8))
