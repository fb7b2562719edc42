import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import on_cuda, per_row

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
MIN_SCALE = 1e-12  # an all-zero row still gets a finite scale


# ---- torch references ----
def quant_fp8_per_token_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # x [M, K] -> (q fp8 [M, K], scale fp32 [M, 1]) with x ~= q * scale
    scale = (x.float().abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=MIN_SCALE)
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def quant_fp8_per_tensor_ref(x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # static activation scale (compressed-tensors input_scale, one value) -> (q fp8 [M, K], scale fp32 [1, 1])
    s = scale.detach().float().reshape(1, 1).to(x.device)
    return (x.float() / s).clamp(-FP8_MAX, FP8_MAX).to(FP8), s


def fp8_gemm_ref(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    # xq fp8 [M, K], x_scale [M, 1] or one value; w fp8 [N, K], w_scale [N, 1] or one value -> [M, N] out_dtype
    m, n = xq.shape[0], w.shape[0]
    acc = xq.float() @ w.float().t()
    out = acc * per_row(x_scale, m, "x_scale")[:, None] * per_row(w_scale, n, "w_scale")[None, :]
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def quant_fp8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quant_fp8_per_token_triton(x) if on_cuda(x) else quant_fp8_per_token_ref(x)


def quant_fp8_per_tensor(x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quant_fp8_per_tensor_triton(x, scale) if on_cuda(x) else quant_fp8_per_tensor_ref(x, scale)


def fp8_gemm(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    if on_cuda(xq, x_scale, w, w_scale, bias):
        return fp8_gemm_triton(xq, x_scale, w, w_scale, out_dtype, bias)
    return fp8_gemm_ref(xq, x_scale, w, w_scale, out_dtype, bias)
