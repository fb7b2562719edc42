"""Pure tensor quantizers (compressed-tensors qparam formulas); each returns (q, scale[, zero_point])."""
import torch

from kvant.kernels.formats import FP8, FP8_MAX, INT4_MAX, INT4_MIN, INT8_MAX, INT8_MIN

MIN_STORED_SCALE = torch.finfo(torch.float16).tiny  # an all-zero row still gets a finite, storable scale


def _round_scale(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # the scale is stored in `dtype`; quantize against the stored value so dequantization is exact
    return scale.clamp(min=MIN_STORED_SCALE).to(dtype).float().clamp(min=MIN_STORED_SCALE)


def fp8_channel_scale(w: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    # w [N, K] -> fp32 scale [N, 1], already rounded to scale_dtype
    assert w.dim() == 2
    return _round_scale(w.float().abs().amax(dim=1, keepdim=True) / FP8_MAX, scale_dtype)


def int8_channel_scale(w: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    # w [N, K] -> fp32 scale [N, 1]; symmetric: absmax / 127.5 (half the code range) as compressed-tensors computes it
    assert w.dim() == 2
    return _round_scale(w.float().abs().amax(dim=1, keepdim=True) / ((INT8_MAX - INT8_MIN) / 2), scale_dtype)


def quantize_fp8_per_channel(w: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16):
    # w [N, K] -> (q fp8 [N, K], scale [N, 1] in scale_dtype)
    scale = fp8_channel_scale(w, scale_dtype)
    q = (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale.to(scale_dtype)


def quantize_fp8_per_tensor(w: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16, absmax: float | None = None):
    # w [N, K] -> (q fp8 [N, K], scale [1]); absmax overrides the observed range (static activation scales)
    amax = w.float().abs().amax() if absmax is None else torch.tensor(float(absmax))
    scale = _round_scale((amax / FP8_MAX).reshape(1), scale_dtype)
    q = (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale.to(scale_dtype)


def quantize_int8_per_channel(w: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16):
    # w [N, K] -> (q int8 [N, K], scale [N, 1]); symmetric: scale = absmax / 127.5 as compressed-tensors computes it
    scale = int8_channel_scale(w, scale_dtype)
    q = torch.round(w.float() / scale).clamp(INT8_MIN, INT8_MAX).to(torch.int8)
    return q, scale.to(scale_dtype)


# the "mse" observer's grid (llm-compressor's MSE observer defaults): each group's range is shrunk by 1 - i / GRID for
# i < MAX_SHRINK * GRID, keeping the shrink with the least sum |w - dequant(quant(w))| ** NORM over the group
MSE_GRID, MSE_MAX_SHRINK, MSE_NORM = 100, 0.2, 2.4
OBSERVERS = ("minmax", "mse")


def _int4_range_qparams(lo: torch.Tensor, hi: torch.Tensor, symmetric: bool, scale_dtype: torch.dtype):
    # per-group range (lo <= 0 <= hi) -> scale fp32 (rounded to scale_dtype), zero point int8 or None
    if symmetric:
        return _round_scale(torch.maximum(-lo, hi) / ((INT4_MAX - INT4_MIN) / 2), scale_dtype), None
    scale = _round_scale((hi - lo) / (INT4_MAX - INT4_MIN), scale_dtype)
    zp = torch.round(INT4_MIN - lo / scale).clamp(INT4_MIN, INT4_MAX).to(torch.int8)
    return scale, zp


def _mse_range(g: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, symmetric: bool, scale_dtype: torch.dtype):
    # g [N, G, g] -> the shrunk (lo, hi) [N, G] per group with the least round-trip error ** MSE_NORM
    best_err = torch.full_like(lo, float("inf"))
    best_lo, best_hi = lo.clone(), hi.clone()
    for i in range(int(MSE_MAX_SHRINK * MSE_GRID)):
        p = 1 - i / MSE_GRID
        scale, zp = _int4_range_qparams(lo * p, hi * p, symmetric, scale_dtype)
        s = scale.unsqueeze(-1)
        z = 0.0 if zp is None else zp.float().unsqueeze(-1)
        deq = (torch.round(g / s + z).clamp(INT4_MIN, INT4_MAX) - z) * s
        err = (deq - g).abs().pow(MSE_NORM).sum(dim=-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo, best_hi = torch.where(better, lo * p, best_lo), torch.where(better, hi * p, best_hi)
    return best_lo, best_hi


def int4_qparams(w: torch.Tensor, group_size: int, symmetric: bool = True, scale_dtype: torch.dtype = torch.bfloat16,
                 observer: str = "minmax"):
    # w [N, K] -> scale fp32 [N, K // G] (already rounded to scale_dtype), zero_point int8 [N, K // G] or None.
    # observer "minmax": each group's full range; "mse": the range shrink with the least round-trip error
    if observer not in OBSERVERS:
        raise ValueError(f"observer must be one of {OBSERVERS}, got {observer!r}")
    n, k = w.shape
    g = w.float().reshape(n, k // group_size, group_size)
    lo, hi = g.amin(dim=-1).clamp(max=0), g.amax(dim=-1).clamp(min=0)
    if observer == "mse":
        lo, hi = _mse_range(g, lo, hi, symmetric, scale_dtype)
    return _int4_range_qparams(lo, hi, symmetric, scale_dtype)


def quantize_int4_with(w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, group_size: int):
    # w [N, K] with per-group scale/zp [N, K // G] -> q int8 [N, K] in [-8, 7]
    s = scale.float().repeat_interleave(group_size, dim=1)
    q = torch.round(w.float() / s)
    if zero_point is not None:
        q = q + zero_point.float().repeat_interleave(group_size, dim=1)
    return q.clamp(INT4_MIN, INT4_MAX).to(torch.int8)


def dequantize_int4(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, group_size: int):
    # q int8 [N, K] -> fp32 [N, K]: (q - zp) * scale
    qf = q.float()
    if zero_point is not None:
        qf = qf - zero_point.float().repeat_interleave(group_size, dim=1)
    return qf * scale.float().repeat_interleave(group_size, dim=1)


def quantize_int4_groupwise(w: torch.Tensor, group_size: int, symmetric: bool = True,
                            scale_dtype: torch.dtype = torch.bfloat16):
    # w [N, K], K % group_size == 0 -> (q int8 [N, K] in [-8, 7], scale [N, K // G] scale_dtype, zp int8 or None)
    assert w.dim() == 2 and w.shape[1] % group_size == 0, f"{tuple(w.shape)} not divisible by group {group_size}"
    scale, zp = int4_qparams(w, group_size, symmetric, scale_dtype)
    return quantize_int4_with(w, scale, zp, group_size), scale.to(scale_dtype), zp


def fake_quantize_weight(w: torch.Tensor, scheme_weights, scale_dtype: torch.dtype) -> torch.Tensor:
    # round-to-nearest quantize then dequantize, in fp32 (used by AWQ's searches)
    if scheme_weights.num_bits == 4:
        q, s, zp = quantize_int4_groupwise(w, scheme_weights.group_size, scheme_weights.symmetric, scale_dtype)
        return dequantize_int4(q, s, zp, scheme_weights.group_size)
    if scheme_weights.type == "float":
        fn = quantize_fp8_per_tensor if scheme_weights.strategy == "tensor" else quantize_fp8_per_channel
    else:
        fn = quantize_int8_per_channel
    q, s = fn(w, scale_dtype)
    return q.float() * s.float()
