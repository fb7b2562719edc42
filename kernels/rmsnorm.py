import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import on_cuda, pdl_enter, pdl_launch


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    # x [..., H]; HF Llama order: fp32 normalise, cast to x.dtype, then scale by weight
    if residual is not None:
        x = (x.float() + residual.float()).to(x.dtype)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    out = (h.to(x.dtype).float() * weight.float()).to(x.dtype)
    return out if residual is None else (out, x)


@triton.jit
def rms_norm_row(x_ptr, r_ptr, w_ptr, sum_ptr, row, offs, mask, H, eps, HAS_RESIDUAL: tl.constexpr):
    # one row (all of it in offs): the residual add (stored to sum_ptr), then HF's order of rms_norm_ref; returns the
    # normalised row times weight in fp32, before its final rounding (also kvant.kernels.quant_rows.rms_norm_quant's)
    x = tl.load(x_ptr + row * H + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + row * H + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * H + offs, x, mask=mask)
    h = x.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(h * h, axis=0) / H + eps)
    y = (h * inv).to(x_ptr.dtype.element_ty).to(tl.float32)
    return y * tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _rms_norm_kernel(x_ptr, r_ptr, w_ptr, out_ptr, sum_ptr, H, eps,
                     HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    pdl_enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < H
    y = rms_norm_row(x_ptr, r_ptr, w_ptr, sum_ptr, row, offs, mask, H, eps, HAS_RESIDUAL)
    tl.store(out_ptr + row * H + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def norm_rows(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None):
    """The operands a row kernel of this file takes (also kvant.kernels.quant_rows.rms_norm_quant's): x and the
    residual as contiguous [M, H] rows in x's dtype, and the [M, H] buffer for x + residual (None without one)."""
    hidden = x.shape[-1]
    if weight.shape != (hidden,):
        raise ValueError(f"weight must have shape ({hidden},), got {tuple(weight.shape)}")
    x2 = x.reshape(-1, hidden).contiguous()
    if residual is None:
        return x2, None, None
    return x2, residual.reshape(-1, hidden).to(x.dtype).contiguous(), torch.empty_like(x2)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    shape, hidden = x.shape, x.shape[-1]
    x2, r2, summed = norm_rows(x, weight, residual)
    out = torch.empty_like(x2)
    if x2.shape[0]:
        _rms_norm_kernel[(x2.shape[0],)](x2, r2 if r2 is not None else x2, weight.contiguous(), out,
                                         summed if summed is not None else out, hidden, float(eps),
                                         HAS_RESIDUAL=residual is not None, BLOCK=triton.next_power_of_2(hidden),
                                         num_warps=4 if hidden <= 2048 else 8, **pdl_launch(x.device))
    if residual is None:
        return out.reshape(shape)
    return out.reshape(shape), summed.reshape(shape)


def rms_norm_torch(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    """rms_norm_ref's values in fewer ops (the CPU path): a 16-bit add or multiply of two same-dtype tensors rounds
    its fp32 result once, as the reference's upcast, op, downcast does."""
    if x.dtype != weight.dtype or (residual is not None and residual.dtype != x.dtype):
        return rms_norm_ref(x, weight, eps, residual)
    if residual is not None:
        x = x + residual
    h = x.float()
    out = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight
    return out if residual is None else (out, x)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    if on_cuda(x, weight, residual):
        return rms_norm_triton(x, weight, eps, residual)
    return rms_norm_torch(x, weight, eps, residual)
