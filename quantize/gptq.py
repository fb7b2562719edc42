"""GPTQ (Frantar et al.): quantize columns in turn, spreading each column's error over the not-yet-quantized ones
through the inverse Hessian of the layer input. Group/channel qparams are fixed up front from the original weight
("static groups"), so act-order only permutes the processing order and the saved artifact needs no g_idx."""
import logging
from dataclasses import dataclass

import torch

from kvant.kernels.formats import FP8, FP8_MAX, INT4_MAX, INT4_MIN

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class GPTQResult:
    weight: torch.Tensor  # fp32 [N, K], every entry on the quantization grid of its (row, group)
    loss: float  # sum over columns of (w - q)^2 / (2 d^2), GPTQ's reported loss
    fell_back: bool  # Cholesky failed at every dampening tried: round-to-nearest was used


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor | None:
    # upper Cholesky factor of H^-1 after adding damp * mean(diag H) to the diagonal; None if not positive definite
    h = h.clone()
    h.diagonal().add_(damp * h.diagonal().mean())
    chol, info = torch.linalg.cholesky_ex(h)
    if info.item():
        return None
    hinv, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(chol), upper=True)
    return None if info.item() else hinv


def _round_to_grid(col, s, z, qmin: int, qmax: int, fp8: bool) -> torch.Tensor:
    if fp8:
        return (col / s).clamp(-FP8_MAX, FP8_MAX).to(FP8).float() * s
    return (torch.round(col / s + z).clamp(qmin, qmax) - z) * s


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None,
                  *, qmin: int = INT4_MIN, qmax: int = INT4_MAX, fp8: bool = False, dampening_frac: float = 0.01,
                  block_size: int = 128, actorder: bool = True) -> GPTQResult:
    # w fp32 [N, K]; hessian fp32 [K, K] = 2 X^T X / n; scale / zero_point: fp32 [N, K], the qparams of every column
    # in the original order (group qparams repeated over the group's columns)
    w = w.clone().float()
    h = hessian.clone().float()
    n_cols = w.shape[1]
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(h.diagonal(), descending=True) if actorder else torch.arange(n_cols, device=h.device)
    w, h, scale = w[:, perm], h[perm][:, perm], scale[:, perm].float()
    zp = zero_point[:, perm].float() if zero_point is not None else torch.zeros_like(scale)
    hinv = None
    for damp in (dampening_frac, dampening_frac * 10, 0.1, 1.0):
        hinv = _inverse_cholesky(h, damp)
        if hinv is not None:
            break
        log.warning("GPTQ: Hessian not positive definite at dampening %.3g, retrying with more", damp)
    if hinv is None:
        log.warning("GPTQ: Cholesky failed at every dampening, using round-to-nearest for this layer")
        q = _round_to_grid(w, scale, zp, qmin, qmax, fp8)
        return GPTQResult(q[:, torch.argsort(perm)], 0.0, True)
    q = torch.zeros_like(w)
    loss = 0.0
    for i1 in range(0, n_cols, block_size):
        i2 = min(i1 + block_size, n_cols)
        w1 = w[:, i1:i2].clone()  # [N, B]
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        s1, z1 = scale[:, i1:i2], zp[:, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]
            qcol = _round_to_grid(col, s1[:, i], z1[:, i], qmin, qmax, fp8)
            q[:, i1 + i] = qcol
            err = (col - qcol) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        loss += float(err1.pow(2).sum()) / 2  # per block: the loop above runs once per column, this once per B
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return GPTQResult(q[:, torch.argsort(perm)], loss, False)
