"""W4A16 on the CPU: the checkpoint's INT4 codes laid out once, at load, for a fast CPU GEMM, instead of unpacked on
every step. bf16 activations use torch's CPU int4 GEMM (`_weight_int4pack_mm_for_cpu`: half the bytes of a bf16
weight, codes unpacked in registers); where it does not apply (other activation dtypes, where it is slower than a
dense GEMM; N not a multiple of 16; group sizes other than 32..256) the weight is dequantized once to a dense matrix.
The reference is `kvant.kernels.w4a16_gemm.w4a16_gemm_ref` (same operands, checkpoint layout)."""
from dataclasses import dataclass

import torch

from kvant.kernels.int4_pack import unpack_int4

INT4PACK_GROUPS = (32, 64, 128, 256)
INT4PACK_DTYPES = (torch.bfloat16,)  # fp32 activations: torch's int4 GEMM was ~10x slower than a dense fp32 GEMM


@dataclass(frozen=True)
class CpuW4:
    dtype: torch.dtype  # the activation dtype this layout serves
    group_size: int
    packed: torch.Tensor | None = None  # uint8 [N, K // 2] in torch's CPU int4 layout
    scale_zeros: torch.Tensor | None = None  # [K // G, N, 2] (scale, zero): w = (code - 8) * scale + zero
    dense: torch.Tensor | None = None  # [N, K] in `dtype`, where the int4 GEMM does not apply


def uses_int4pack(n: int, group_size: int, dtype: torch.dtype) -> bool:
    return (dtype in INT4PACK_DTYPES and n % 16 == 0 and group_size in INT4PACK_GROUPS
            and hasattr(torch, "_weight_int4pack_mm_for_cpu"))


def prepare_w4_cpu(weight_packed, weight_scale, group_size: int, weight_zero_point=None,
                   dtype: torch.dtype = torch.bfloat16) -> CpuW4:
    """weight_packed int32 [N, K // 8] (compressed-tensors, offset-binary), weight_scale [N, K // G], zero points
    int32 [N // 8, K // G] or None -> the layout for x of `dtype`."""
    n, k = weight_packed.shape[0], weight_packed.shape[1] * 8
    q = unpack_int4(weight_packed, k).to(torch.int32)  # [N, K] in [-8, 7]
    scale = weight_scale.float()  # [N, K // G]
    zp = None
    if weight_zero_point is not None:
        zp = unpack_int4(weight_zero_point.t().contiguous(), n).t().float()  # [N, K // G]
    if not uses_int4pack(n, group_size, dtype):
        w = q.float() - (0.0 if zp is None else zp.repeat_interleave(group_size, dim=1))
        return CpuW4(dtype, group_size, dense=(w * scale.repeat_interleave(group_size, dim=1)).to(dtype).contiguous())
    packed = torch._convert_weight_to_int4pack_for_cpu((q + 8).contiguous(), 1)
    zero = torch.zeros_like(scale) if zp is None else -zp * scale  # (v - zp) * s = (code - 8) * s - zp * s
    scale_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(dtype).contiguous()
    return CpuW4(dtype, group_size, packed=packed, scale_zeros=scale_zeros)


def w4a16_cpu_gemm(x: torch.Tensor, w: CpuW4) -> torch.Tensor:
    # x [M, K] in w.dtype -> [M, N] in x.dtype
    assert x.dtype == w.dtype, f"layout built for {w.dtype}, got x in {x.dtype}"
    if w.dense is not None:
        return torch.nn.functional.linear(x, w.dense)
    return torch._weight_int4pack_mm_for_cpu(x.contiguous(), w.packed, w.group_size, w.scale_zeros)
