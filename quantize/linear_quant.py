"""One Linear weight -> its compressed-tensors tensors (RTN or GPTQ) and the dequantized weight the calibration
loop propagates with."""
import torch

from kvant.kernels.int4_pack import pack_int4
from kvant.quantize import primitives as P
from kvant.quantize.gptq import gptq_quantize
from kvant.quantize.schemes import Scheme


def _qparams(w: torch.Tensor, scheme: Scheme, scale_dtype: torch.dtype):
    # fp32 scale [N, G] / [N, 1] / [1, 1] (already rounded to scale_dtype) and int zero point [N, G] or None
    a = scheme.weights
    if a.num_bits == 4:
        return P.int4_qparams(w, a.group_size, a.symmetric, scale_dtype)
    if a.type == "float":
        _, s = P.quantize_fp8_per_tensor(w, scale_dtype) if a.strategy == "tensor" else P.quantize_fp8_per_channel(w, scale_dtype)
    else:
        _, s = P.quantize_int8_per_channel(w, scale_dtype)
    return s.float().reshape(-1, 1), None


def _dequant_all(w: torch.Tensor, scheme: Scheme, scale: torch.Tensor, zp, dtype: torch.dtype) -> torch.Tensor:
    # round-to-nearest, fp32 [N, K]. The quotient w / scale is taken in the checkpoint dtype, as compressed-tensors
    # takes it, so a data-free artifact has the codes that library (and llm-compressor) would write for the same
    # weights; the fp32 quotient differs from it by one step on ~1 % of INT4 and ~3 % of FP8 codes near a tie.
    a = scheme.weights
    cols = a.group_size if a.num_bits == 4 else w.shape[1]
    s = scale.float().expand(w.shape[0], -1).repeat_interleave(cols, dim=1)[:, : w.shape[1]]
    ratio = w.to(dtype) / s.to(dtype)
    if a.num_bits == 4:
        if zp is not None:
            z = zp.repeat_interleave(cols, dim=1)
            return (torch.round((ratio + z.to(dtype)).float()).clamp(-8, 7) - z.float()) * s
        return torch.round(ratio.float()).clamp(-8, 7) * s
    ratio = ratio.float()
    if a.type == "float":
        return ratio.clamp(-P.FP8_MAX, P.FP8_MAX).to(P.FP8).float() * s
    return torch.round(ratio).clamp(-128, 127) * s


def quantize_weight(w: torch.Tensor, scheme: Scheme, scale_dtype: torch.dtype, hessian: torch.Tensor | None = None,
                    *, dampening_frac: float = 0.01, block_size: int = 128, actorder: bool = True):
    # w fp32 [N, K] -> (compressed-tensors tensors {name: tensor} for this Linear, dequantized fp32 [N, K], gptq loss)
    w = w.float()
    scale, zp = _qparams(w, scheme, scale_dtype)
    loss = None
    if hessian is not None:
        a = scheme.weights
        cols = a.group_size if a.num_bits == 4 else w.shape[1]  # columns sharing one qparam column
        expand = lambda t: t.float().expand(w.shape[0], -1).repeat_interleave(cols, dim=1)[:, : w.shape[1]]
        qmax = 7 if a.num_bits == 4 else 127
        result = gptq_quantize(w, hessian, expand(scale), None if zp is None else expand(zp), qmin=-qmax - 1,
                               qmax=qmax, fp8=a.type == "float", dampening_frac=dampening_frac,
                               block_size=block_size, actorder=actorder)
        deq, loss = result.weight, result.loss
    else:
        deq = _dequant_all(w, scheme, scale, zp, scale_dtype)
    a = scheme.weights
    if a.num_bits == 4:
        q = P.quantize_int4_with(deq, scale, zp, a.group_size)  # deq is on the grid: this recovers the integers
        tensors = {"weight_packed": pack_int4(q), "weight_scale": scale.to(scale_dtype),
                   "weight_shape": torch.tensor(list(w.shape), dtype=torch.int64)}
        if zp is not None:
            tensors["weight_zero_point"] = pack_int4(zp.t().contiguous()).t().contiguous()  # [N // 8, G], dim-0 packed
    elif a.type == "float":
        q = (deq / scale).clamp(-P.FP8_MAX, P.FP8_MAX).to(P.FP8)
        shape = (1,) if a.strategy == "tensor" else (w.shape[0], 1)
        tensors = {"weight": q, "weight_scale": scale.reshape(shape).to(scale_dtype)}
    else:
        q = torch.round(deq / scale).clamp(-128, 127).to(torch.int8)
        tensors = {"weight": q, "weight_scale": scale.to(scale_dtype)}
    return tensors, deq, loss
