"""Triton activation quantisation shared by the FP8 and INT8 paths: per-token (dynamic) or one static scale."""
import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import interpreted
from kvant.kernels.formats import FP8_MAX, INT8_MAX, MIN_SCALE

# the same bounds, readable inside @triton.jit (the FP8 cache stores of kv_store and rope_store use FP8_MAX_TL)
FP8_MAX_TL = tl.constexpr(FP8_MAX)
_MIN_SCALE = tl.constexpr(MIN_SCALE)


@triton.jit
def _round_half_even(y):
    r = tl.floor(y + 0.5)
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(((r - y) == 0.5) & odd, r - 1.0, r)


@triton.jit
def round_to_e4m3(y):
    # y (fp32, within +-FP8_MAX) rounded half-to-even onto the e4m3 grid: 3 mantissa bits, subnormal step 2^-9. The
    # interpreter's fp32 -> fp8 cast truncates and drops mantissa carries; GPUs round right and skip this.
    a = tl.abs(y)
    e = tl.maximum(tl.floor(tl.log2(tl.maximum(a, 1e-30))), -6.0)
    step = tl.exp2(e - 3.0)
    r = _round_half_even(a / step) * step
    return tl.where(y < 0, -r, r)


@triton.jit
def _quant_rows_kernel(x_ptr, q_ptr, s_ptr, K, stride_x, stride_q, QMAX: tl.constexpr, IS_INT: tl.constexpr,
                       STATIC: tl.constexpr, EXACT_ROUND: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    if STATIC:
        scale = tl.load(s_ptr)
    else:
        amax = tl.zeros((BLOCK,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK):
            offs = k0 + tl.arange(0, BLOCK)
            x = tl.load(x_ptr + row * stride_x + offs, mask=offs < K, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
        scale = tl.maximum(tl.max(amax, axis=0) / QMAX, _MIN_SCALE)
        tl.store(s_ptr + row, scale)
    for k0 in range(0, K, BLOCK):
        offs = k0 + tl.arange(0, BLOCK)
        y = tl.load(x_ptr + row * stride_x + offs, mask=offs < K, other=0.0).to(tl.float32) / scale
        if IS_INT:
            y = tl.clamp(_round_half_even(y), -QMAX - 1.0, QMAX)  # int8: [-128, 127]
        else:
            y = tl.clamp(y, -QMAX, QMAX)
            if EXACT_ROUND:
                y = round_to_e4m3(y)
            y = y.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True)  # fp8 is stored through a uint8 view
        tl.store(q_ptr + row * stride_q + offs, y.to(q_ptr.dtype.element_ty), mask=offs < K)


def quant_rows_triton(x: torch.Tensor, qdtype: torch.dtype, static_scale: torch.Tensor | None = None):
    # x [M, K] -> (q [M, K] qdtype, scale fp32 [M, 1] per token, or [1, 1] when static_scale is given)
    m, k = x.shape
    x = x if x.stride(-1) == 1 else x.contiguous()
    q = torch.empty(m, k, dtype=qdtype, device=x.device)
    is_int = qdtype == torch.int8
    qmax = float(INT8_MAX if is_int else FP8_MAX)
    if static_scale is not None:
        scale = static_scale.detach().float().reshape(1, 1).to(x.device)
    else:
        scale = torch.empty(m, 1, dtype=torch.float32, device=x.device)
    if m:
        _quant_rows_kernel[(m,)](x, q if is_int else q.view(torch.uint8), scale, k, x.stride(0), q.stride(0), QMAX=qmax, IS_INT=is_int,
                                 STATIC=static_scale is not None,
                                 EXACT_ROUND=interpreted(_quant_rows_kernel), BLOCK=min(4096, triton.next_power_of_2(k)),
                                 num_warps=4)
    return q, scale
