"""Triton activation quantisation shared by the FP8 and INT8 paths: per-token (dynamic) or one static scale; and the
same per-token quantisation fused into the kernels that produce a W8A8 GEMM's input (RMSNorm, SiLU·mul), so that the
16-bit activation is never written out: `rms_norm_quant`, `silu_and_mul_quant`."""
import torch
import triton
import triton.language as tl

from kvant.kernels.activation import silu_and_mul_ref
from kvant.kernels.dispatch import interpreted, on_cuda, pdl_enter, pdl_launch
from kvant.kernels.formats import FP8, FP8_MAX, INT8_MAX, INT8_MIN, MIN_SCALE
from kvant.kernels.rmsnorm import norm_rows, rms_norm_ref, rms_norm_row

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
                       STATIC: tl.constexpr, EXACT_ROUND: tl.constexpr, BLOCK: tl.constexpr,
                       PDL: tl.constexpr = False):
    pdl_enter(PDL)
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
        y = tl.load(x_ptr + row * stride_x + offs, mask=offs < K, other=0.0).to(tl.float32)
        _store_quantized(q_ptr + row * stride_q + offs, y, scale, offs < K, QMAX, IS_INT, EXACT_ROUND)


@triton.jit
def _store_quantized(ptr, y, scale, mask, QMAX: tl.constexpr, IS_INT: tl.constexpr, EXACT_ROUND: tl.constexpr):
    # fp32 values / scale -> int8, or e4m3 stored through a uint8 view
    y = y / scale
    if IS_INT:
        q = tl.clamp(_round_half_even(y), -QMAX - 1.0, QMAX)  # int8: [-128, 127]
        tl.store(ptr, q.to(ptr.dtype.element_ty), mask=mask)
    else:
        y = tl.clamp(y, -QMAX, QMAX)
        if EXACT_ROUND:
            y = round_to_e4m3(y)
        tl.store(ptr, y.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True), mask=mask)


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
                                 num_warps=4, **pdl_launch(x.device))
    return q, scale


def quant_rows_ref(x: torch.Tensor, qdtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token symmetric quantisation, x [M, K] -> (q [M, K] FP8 e4m3 or int8, scale fp32 [M, 1]), x ~= q * scale;
    int8 rounds half to even."""
    qmax = INT8_MAX if qdtype == torch.int8 else FP8_MAX
    scale = (x.float().abs().amax(dim=-1, keepdim=True) / qmax).clamp(min=MIN_SCALE)
    y = x.float() / scale
    if qdtype == torch.int8:
        return torch.round(y).clamp(INT8_MIN, INT8_MAX).to(torch.int8), scale
    return y.clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


# ---- fused: the producer of a W8A8 GEMM's input writes it quantized ----
def _qargs(qdtype: torch.dtype) -> tuple[float, bool]:
    if qdtype not in (FP8, torch.int8):
        raise ValueError(f"per-token activation quantisation is to float8_e4m3fn or int8, got {qdtype}")
    return (float(INT8_MAX), True) if qdtype == torch.int8 else (float(FP8_MAX), False)


def rms_norm_quant_ref(x, weight, eps, residual=None, qdtype=FP8):
    """rms_norm_ref (with the residual add), then quant_rows_ref on its 16-bit output: (q, scale[, x + residual])."""
    out = rms_norm_ref(x, weight, eps, residual)
    y, summed = out if residual is not None else (out, None)
    q, scale = quant_rows_ref(y.reshape(-1, y.shape[-1]), qdtype)
    return (q, scale) if residual is None else (q, scale, summed)


@triton.jit
def _rms_norm_quant_kernel(x_ptr, r_ptr, w_ptr, q_ptr, s_ptr, sum_ptr, H, eps, HAS_RESIDUAL: tl.constexpr,
                           QMAX: tl.constexpr, IS_INT: tl.constexpr, EXACT_ROUND: tl.constexpr, BLOCK: tl.constexpr,
                           PDL: tl.constexpr = False):
    # kvant.kernels.rmsnorm's row, rounded to x's dtype as it stores it, then quantised with the row's own scale
    pdl_enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < H
    y = rms_norm_row(x_ptr, r_ptr, w_ptr, sum_ptr, row, offs, mask, H, eps, HAS_RESIDUAL)
    y = y.to(x_ptr.dtype.element_ty).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(y), axis=0) / QMAX, _MIN_SCALE)
    tl.store(s_ptr + row, scale)
    _store_quantized(q_ptr + row * H + offs, y, scale, mask, QMAX, IS_INT, EXACT_ROUND)


def rms_norm_quant_triton(x, weight, eps, residual=None, qdtype=FP8):
    qmax, is_int = _qargs(qdtype)
    x2, r2, summed = norm_rows(x, weight, residual)
    m, hidden = x2.shape
    q = torch.empty(m, hidden, dtype=qdtype, device=x.device)
    scale = torch.empty(m, 1, dtype=torch.float32, device=x.device)
    if m:
        _rms_norm_quant_kernel[(m,)](x2, r2 if r2 is not None else x2, weight.contiguous(),
                                     q if is_int else q.view(torch.uint8), scale,
                                     summed if summed is not None else x2, hidden, float(eps),
                                     HAS_RESIDUAL=residual is not None, QMAX=qmax, IS_INT=is_int,
                                     EXACT_ROUND=interpreted(_rms_norm_quant_kernel),
                                     BLOCK=triton.next_power_of_2(hidden), num_warps=4 if hidden <= 2048 else 8,
                                     **pdl_launch(x.device))
    return (q, scale) if residual is None else (q, scale, summed.reshape(x.shape))


def rms_norm_quant(x, weight, eps, residual=None, qdtype=FP8):
    """x [..., H] (+ residual) -> RMSNorm quantised per token: (q [M, H], scale fp32 [M, 1][, x + residual])."""
    if on_cuda(x, weight, residual):
        return rms_norm_quant_triton(x, weight, eps, residual, qdtype)
    return rms_norm_quant_ref(x, weight, eps, residual, qdtype)


def silu_and_mul_quant_ref(x: torch.Tensor, qdtype=FP8) -> tuple[torch.Tensor, torch.Tensor]:
    y = silu_and_mul_ref(x)
    return quant_rows_ref(y.reshape(-1, y.shape[-1]), qdtype)


@triton.jit
def _silu_act(x_ptr, row, stride_x, offs, mask, I):
    # kvant.kernels.activation's value, rounded to x's dtype as it stores it
    g = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(x_ptr + row * stride_x + I + offs, mask=mask, other=0.0).to(tl.float32)
    return (g * tl.sigmoid(g) * u).to(x_ptr.dtype.element_ty).to(tl.float32)


@triton.jit
def _silu_mul_quant_kernel(x_ptr, q_ptr, s_ptr, stride_x, I, QMAX: tl.constexpr, IS_INT: tl.constexpr,
                           EXACT_ROUND: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    # two passes over the row: the activation's absmax, then the activation again (recomputed: gate_up is read twice,
    # the 16-bit activation is never written), quantised
    pdl_enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    amax = tl.zeros((BLOCK,), dtype=tl.float32)
    for k0 in range(0, I, BLOCK):
        offs = k0 + tl.arange(0, BLOCK)
        amax = tl.maximum(amax, tl.abs(_silu_act(x_ptr, row, stride_x, offs, offs < I, I)))
    scale = tl.maximum(tl.max(amax, axis=0) / QMAX, _MIN_SCALE)
    tl.store(s_ptr + row, scale)
    for k0 in range(0, I, BLOCK):
        offs = k0 + tl.arange(0, BLOCK)
        y = _silu_act(x_ptr, row, stride_x, offs, offs < I, I)
        _store_quantized(q_ptr + row * I + offs, y, scale, offs < I, QMAX, IS_INT, EXACT_ROUND)


def silu_and_mul_quant_triton(x: torch.Tensor, qdtype=FP8) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[-1] % 2:
        raise ValueError(f"x last dim must be even (gate and up halves), got {x.shape[-1]}")
    qmax, is_int = _qargs(qdtype)
    x2 = x.reshape(-1, x.shape[-1])
    x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
    m, i = x2.shape[0], x2.shape[1] // 2
    q = torch.empty(m, i, dtype=qdtype, device=x.device)
    scale = torch.empty(m, 1, dtype=torch.float32, device=x.device)
    if m:
        _silu_mul_quant_kernel[(m,)](x2, q if is_int else q.view(torch.uint8), scale, x2.stride(0), i, QMAX=qmax,
                                     IS_INT=is_int, EXACT_ROUND=interpreted(_silu_mul_quant_kernel),
                                     BLOCK=min(4096, triton.next_power_of_2(i)), num_warps=8, **pdl_launch(x.device))
    return q, scale


def silu_and_mul_quant(x: torch.Tensor, qdtype=FP8) -> tuple[torch.Tensor, torch.Tensor]:
    """gate_up [..., 2I] -> SiLU(gate)·up quantised per token: (q [M, I], scale fp32 [M, 1])."""
    return silu_and_mul_quant_triton(x, qdtype) if on_cuda(x) else silu_and_mul_quant_ref(x, qdtype)
