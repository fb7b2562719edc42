import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import on_cuda, per_row

MIN_SCALE = 1e-12


# ---- torch references ----
def quant_int8_per_token_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # x [M, K] -> (q int8 [M, K], scale fp32 [M, 1]); symmetric, round half to even
    scale = (x.float().abs().amax(dim=-1, keepdim=True) / 127.0).clamp(min=MIN_SCALE)
    return torch.round(x.float() / scale).clamp(-128, 127).to(torch.int8), scale


def int8_gemm_ref(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    # xq int8 [M, K], w int8 [N, K]: exact integer dot products, then fp32 scales and bias
    m, n = xq.shape[0], w.shape[0]
    acc = (xq.long() @ w.long().t()).float()
    out = acc * per_row(x_scale, m, "x_scale")[:, None] * per_row(w_scale, n, "w_scale")[None, :]
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def quant_int8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quant_int8_per_token_triton(x) if on_cuda(x) else quant_int8_per_token_ref(x)


def int8_gemm(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    if on_cuda(xq, x_scale, w, w_scale, bias):
        return int8_gemm_triton(xq, x_scale, w, w_scale, out_dtype, bias)
    return int8_gemm_ref(xq, x_scale, w, w_scale, out_dtype, bias)
