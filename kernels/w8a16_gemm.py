import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import on_cuda, per_row


def w8a16_gemm_ref(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    # x [M, K] 16-bit; weight int8 | fp8 [N, K]; weight_scale [N, 1] (or one value) -> [M, N] in x.dtype
    acc = x.float() @ weight.float().t()
    return (acc * per_row(weight_scale, weight.shape[0], "weight_scale")[None, :]).to(x.dtype)


def w8a16_gemm(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    if on_cuda(x, weight, weight_scale):
        return w8a16_gemm_triton(x, weight, weight_scale)
    return w8a16_gemm_ref(x, weight, weight_scale)
