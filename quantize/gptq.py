"""GPTQ (Frantar et al.): quantize columns in turn, spreading each column's error over the not-yet-quantized ones
through the inverse Hessian of the layer input. Group/channel qparams are fixed up front from the original weight
("static groups"), so act-order only permutes the processing order and the saved artifact needs no g_idx."""
import logging
from dataclasses import dataclass

import numpy as np
import torch

from kvant.kernels.formats import FP8, FP8_MAX, INT4_MAX, INT4_MIN

log = logging.getLogger(__name__)
# columns whose errors are spread one at a time; the rest of a block and later blocks get them by one matmul each
# ("lazy batch" updates, twice over: the block of block_size, and sub-blocks of this many columns inside it)
SUB_BLOCK = 16


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


def _columns_torch(wt, st, zt, qt, errt, hinv, j1: int, j2: int, qmin: int, qmax: int, fp8: bool, asym: bool):
    # GPTQ's column loop over columns j1..j2-1 (rows of the transposed wt): quantize a column, then spread its error
    # over the sub-block's later columns; qt and errt receive the quantized columns and the scaled errors
    for i in range(j1, j2):
        col = wt[i]
        qcol = _round_to_grid(col, st[i], zt[i], qmin, qmax, fp8)
        qt[i] = qcol
        err = errt[i]
        torch.sub(col, qcol, out=err).div_(hinv[i, i])
        if i + 1 < j2:
            wt[i + 1:j2].addr_(hinv[i, i + 1:j2], err, alpha=-1.0)


def _columns_numpy(wt, st, zt, qt, errt, hinv, j1: int, j2: int, qmin: int, qmax: int, fp8: bool, asym: bool):
    # the same loop on numpy views of the same CPU memory (integer grids only): identical float32 arithmetic, each
    # step rounding as torch does (division, round half to even, clamp)
    wn, sn, zn, qn, en = wt.numpy(), st.numpy(), zt.numpy(), qt.numpy(), errt.numpy()
    hn = hinv[j1:j2, j1:j2].cpu().numpy()
    for i in range(j1, j2):
        r, col, qcol, err = i - j1, wn[i], qn[i], en[i]
        np.divide(col, sn[i], out=qcol)
        if asym:
            qcol += zn[i]
        np.round(qcol, out=qcol)
        np.clip(qcol, qmin, qmax, out=qcol)
        if asym:
            qcol -= zn[i]
        qcol *= sn[i]
        np.subtract(col, qcol, out=err)
        err /= hn[r, r]
        if i + 1 < j2:
            wn[i + 1:j2] -= np.multiply.outer(hn[r, r + 1:], err)


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
    # columns as rows (contiguous) from here on: wt[i] is column i of the permuted weight
    wt, st, zt = w.t().contiguous(), scale.t().contiguous(), zp.t().contiguous()
    qt, errt = torch.empty_like(wt), torch.empty_like(wt)
    on_numpy = wt.device.type == "cpu" and not fp8  # numpy's per-call cost is a fraction of torch's on 1-D rows
    sub_block = _columns_numpy if on_numpy else _columns_torch
    for i1 in range(0, n_cols, block_size):
        i2 = min(i1 + block_size, n_cols)
        for j1 in range(i1, i2, SUB_BLOCK):
            j2 = min(j1 + SUB_BLOCK, i2)
            sub_block(wt, st, zt, qt, errt, hinv, j1, j2, qmin, qmax, fp8, zero_point is not None)
            if j2 < i2:  # the sub-block's error over the rest of the block
                wt[j2:i2].addmm_(hinv[j1:j2, j2:i2].t(), errt[j1:j2], alpha=-1.0)
        if i2 < n_cols:  # the block's error over every later column
            wt[i2:].addmm_(hinv[i1:i2, i2:].t(), errt[i1:i2], alpha=-1.0)
    loss = float(errt.pow(2).sum()) / 2
    q = qt.t()
    return GPTQResult(q[:, torch.argsort(perm)], loss, False)
