"""One Linear weight -> its compressed-tensors tensors (RTN or GPTQ) and the dequantized weight the calibration
loop propagates with."""
import hashlib
import threading
from collections import OrderedDict

import torch

from kvant.kernels.formats import FP8, FP8_MAX, INT4_MAX, INT4_MIN, INT8_MAX, INT8_MIN
from kvant.kernels.int4_pack import pack_int4
from kvant.quantize import primitives as P
from kvant.quantize.gptq import gptq_quantize
from kvant.artifact.schemes import Scheme


# INT4 ranges by the "mse" observer cost ~20 round trips of the weight each; the auto search quantizes the same
# weights at the same group sizes in each of its trials, so the ranges are remembered by the weight's bytes (CPU only:
# hashing a GPU tensor means copying it, and the search is cheap there)
MSE_MEMO_SIZE = 4096
_mse_memo: OrderedDict = OrderedDict()
_mse_lock = threading.Lock()


def _int4_qparams(w: torch.Tensor, group_size: int, symmetric: bool, scale_dtype: torch.dtype, observer: str):
    if observer != "mse" or w.device.type != "cpu":
        return P.int4_qparams(w, group_size, symmetric, scale_dtype, observer)
    w = w.contiguous()
    digest = hashlib.blake2b(w.numpy().tobytes(), digest_size=16).digest()
    key = (digest, tuple(w.shape), group_size, symmetric, scale_dtype)
    with _mse_lock:  # the TUI quantizes in worker threads
        found = _mse_memo.get(key)
        if found is not None:
            _mse_memo.move_to_end(key)
    if found is None:
        found = P.int4_qparams(w, group_size, symmetric, scale_dtype, observer)
        with _mse_lock:
            _mse_memo[key] = found
            while len(_mse_memo) > MSE_MEMO_SIZE:
                _mse_memo.popitem(last=False)
    scale, zp = found
    return scale.clone(), None if zp is None else zp.clone()


def _qparams(w: torch.Tensor, scheme: Scheme, scale_dtype: torch.dtype, observer: str = "minmax"):
    # fp32 scale [N, G] / [N, 1] / [1, 1] (already rounded to scale_dtype) and int zero point [N, G] or None;
    # the observer chooses INT4 group ranges (8-bit formats keep the full range: their rounding error is small)
    a = scheme.weights
    if a.num_bits == 4:
        return _int4_qparams(w, a.group_size, a.symmetric, scale_dtype, observer)
    if a.type == "float" and a.strategy == "tensor":
        _, s = P.quantize_fp8_per_tensor(w, scale_dtype)
    else:  # per channel: the scale alone (the codes are rounded once, by the caller)
        s = P.fp8_channel_scale(w, scale_dtype) if a.type == "float" else P.int8_channel_scale(w, scale_dtype)
    return s.float().reshape(-1, 1), None


def _rtn_codes(w: torch.Tensor, scheme: Scheme, scale: torch.Tensor, zp, dtype: torch.dtype) -> torch.Tensor:
    # round-to-nearest codes as stored: int8 [N, K] (INT4 in [-8, 7] with the zero point added, or INT8) or FP8.
    # The quotient w / scale is taken in the checkpoint dtype, as compressed-tensors takes it, so a data-free artifact
    # has the codes that library (and llm-compressor) would write for the same weights; the fp32 quotient differs
    # from it by one step on ~1 % of INT4 and ~3 % of FP8 codes near a tie.
    a = scheme.weights
    n, k = w.shape
    cols = a.group_size if a.num_bits == 4 else k  # columns sharing one scale column
    ratio = w.to(dtype).reshape(n, k // cols, cols) / scale.to(dtype).reshape(-1, k // cols, 1)
    if a.num_bits == 4:
        if zp is not None:
            ratio = ratio + zp.to(dtype).reshape(n, k // cols, 1)
        return torch.round(ratio.float()).clamp_(INT4_MIN, INT4_MAX).to(torch.int8).reshape(n, k)
    if a.type == "float":
        return ratio.float().clamp_(-FP8_MAX, FP8_MAX).to(FP8).reshape(n, k)
    return torch.round(ratio.float()).clamp_(INT8_MIN, INT8_MAX).to(torch.int8).reshape(n, k)


def _dequant_codes(codes: torch.Tensor, scheme: Scheme, scale: torch.Tensor, zp) -> torch.Tensor:
    # stored codes -> fp32 [N, K]
    a = scheme.weights
    n, k = codes.shape
    cols = a.group_size if a.num_bits == 4 else k
    q = codes.float().reshape(n, k // cols, cols)
    if zp is not None:
        q = q - zp.float().reshape(n, k // cols, 1)
    return (q * scale.float().reshape(-1, k // cols, 1)).reshape(n, k)


def quantize_weight(w: torch.Tensor, scheme: Scheme, scale_dtype: torch.dtype, hessian: torch.Tensor | None = None,
                    *, dampening_frac: float = 0.01, block_size: int = 128, actorder: bool = True,
                    dequantize: bool = True, observer: str = "minmax"):
    # w fp32 [N, K] -> (compressed-tensors tensors {name: tensor} for this Linear, dequantized fp32 [N, K] (None when
    # round-to-nearest without `dequantize`), gptq loss)
    codes, scale, zp, deq, loss = _quantize(w.float(), scheme, scale_dtype, hessian, dampening_frac, block_size,
                                            actorder, dequantize, observer)
    return _tensors(codes, scale, zp, scheme, scale_dtype), deq, loss


def can_stack(scheme: Scheme) -> bool:
    # per-row (group or channel) qparams: Linears sharing an input quantize as one matrix, row blocks unchanged
    return scheme.weights.strategy != "tensor"


def quantize_stacked(ws: list[torch.Tensor], scheme: Scheme, scale_dtype: torch.dtype, hessian: torch.Tensor,
                     *, dampening_frac: float = 0.01, block_size: int = 128, actorder: bool = True,
                     observer: str = "minmax") -> list[tuple[dict, torch.Tensor]]:
    """Linears that read the same input (q/k/v, gate/up) through one GPTQ: its rows are independent given the shared
    Hessian, so each row block gets what its own run would (one Cholesky and one column loop instead of several).
    Returns [(tensors, dequantized fp32 [N_i, K])] in the order of `ws`."""
    if not can_stack(scheme):
        raise ValueError(f"scheme {scheme.name} has one scale per tensor: its Linears cannot be stacked")
    codes, scale, zp, deq, _ = _quantize(torch.cat([w.float() for w in ws]), scheme, scale_dtype, hessian,
                                         dampening_frac, block_size, actorder, True, observer)
    out, first = [], 0
    for w in ws:
        rows = slice(first, first + w.shape[0])
        out.append((_tensors(codes[rows], scale[rows], None if zp is None else zp[rows], scheme, scale_dtype),
                    deq[rows]))
        first += w.shape[0]
    return out


def _quantize(w, scheme: Scheme, scale_dtype, hessian, dampening_frac, block_size, actorder, dequantize, observer):
    # fp32 [N, K] -> (stored codes [N, K], scale fp32, zero point or None, dequantized fp32 or None, gptq loss)
    a = scheme.weights
    scale, zp = _qparams(w, scheme, scale_dtype, observer)
    if hessian is None:
        codes = _rtn_codes(w, scheme, scale, zp, scale_dtype)
        return codes, scale, zp, _dequant_codes(codes, scheme, scale, zp) if dequantize else None, None
    cols = a.group_size if a.num_bits == 4 else w.shape[1]  # columns sharing one qparam column
    expand = lambda t: t.float().expand(w.shape[0], -1).repeat_interleave(cols, dim=1)[:, : w.shape[1]]
    qmin, qmax = (INT4_MIN, INT4_MAX) if a.num_bits == 4 else (INT8_MIN, INT8_MAX)
    result = gptq_quantize(w, hessian, expand(scale), None if zp is None else expand(zp), qmin=qmin, qmax=qmax,
                           fp8=a.type == "float", dampening_frac=dampening_frac, block_size=block_size,
                           actorder=actorder)
    deq = result.weight
    # GPTQ's deq is on the grid: dividing by the scale recovers the codes
    if a.num_bits == 4:
        codes = P.quantize_int4_with(deq, scale, zp, a.group_size)
    elif a.type == "float":
        codes = (deq / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    else:
        codes = torch.round(deq / scale).clamp(INT8_MIN, INT8_MAX).to(torch.int8)
    return codes, scale, zp, deq, result.loss


def _tensors(codes: torch.Tensor, scale: torch.Tensor, zp, scheme: Scheme, scale_dtype) -> dict[str, torch.Tensor]:
    # one Linear's compressed-tensors tensors from its codes [N, K] and qparams
    a = scheme.weights
    if a.num_bits == 4:
        tensors = {"weight_packed": pack_int4(codes), "weight_scale": scale.to(scale_dtype),
                   "weight_shape": torch.tensor(list(codes.shape), dtype=torch.int64)}
        if zp is not None:
            tensors["weight_zero_point"] = pack_int4(zp.t().contiguous()).t().contiguous()  # [N // 8, G], dim-0 packed
        return tensors
    if a.type == "float":
        shape = (1,) if a.strategy == "tensor" else (codes.shape[0], 1)
        return {"weight": codes, "weight_scale": scale.reshape(shape).to(scale_dtype)}
    return {"weight": codes, "weight_scale": scale.to(scale_dtype)}
