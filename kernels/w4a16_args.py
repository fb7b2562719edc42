"""What every W4A16 kernel shares: argument checks, the operand preparation, and the nibble-to-float bit trick."""
import torch
import triton
import triton.language as tl

# fp32 bits of 2**23: OR-ing a nibble u into the mantissa gives the float 2**23 + u, no int->float conversion
MAGIC = tl.constexpr(0x4B000000)


def check_args(x, weight_packed, weight_scale, group_size, multiple: int = 8) -> None:
    # `multiple`: what the kernel needs the group size to be a multiple of (a group covers whole words)
    m, k = x.shape
    n = weight_packed.shape[0]
    if weight_packed.dtype != torch.int32 or weight_packed.shape[1] * 8 != k:
        raise ValueError(f"weight_packed must be int32 [N, {k // 8}], got {weight_packed.dtype} "
                         f"{tuple(weight_packed.shape)}")
    if k % group_size or group_size % multiple:
        raise ValueError(f"group_size must divide K={k} and be a multiple of {multiple}, got {group_size}")
    if weight_scale.shape != (n, k // group_size):
        raise ValueError(f"weight_scale must be [{n}, {k // group_size}], got {tuple(weight_scale.shape)}")


def operands(x, weight_packed, weight_scale, weight_zero_point):
    """(x, packed, scale, zp) with unit inner strides; zp is a dummy pointer (packed) when symmetric."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    weight_packed, weight_scale = weight_packed.contiguous(), weight_scale.contiguous()
    zp = weight_zero_point.contiguous() if weight_zero_point is not None else weight_packed
    return x, weight_packed, weight_scale, zp


def largest_pow2_divisor(n: int, cap: int) -> int:
    return min(n & -n, cap)


@triton.jit
def nibble_offset(z_ptr, offs_n, col, stride_zn, mask, HAS_ZP: tl.constexpr):
    # 2**23 + 8 + zp, subtracted from MAGIC | u to give u - 8 - zp (compressed-tensors stores a signed int4 v as the
    # nibble u = v + 8); zp is packed 8 rows per word along N ([N // 8, K // G])
    if HAS_ZP:
        zw = tl.load(z_ptr + (offs_n // 8) * stride_zn + col, mask=mask, other=0)
        return (((zw >> ((offs_n % 8) * 4)) & 0xF) + 8388608).to(tl.float32)
    else:
        return 8388616.0
