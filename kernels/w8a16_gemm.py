import torch

from kvant.kernels.dispatch import on_cuda, per_row
from kvant.kernels.scaled_gemm import scaled_gemm_triton


def w8a16_gemm_ref(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    # x [M, K] 16-bit; weight int8 | fp8 [N, K]; weight_scale [N, 1] (or one value) -> [M, N] in x.dtype
    acc = x.float() @ weight.float().t()
    return (acc * per_row(weight_scale, weight.shape[0], "weight_scale")[None, :]).to(x.dtype)


def w8a16_gemm_triton(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    if weight.dtype not in (torch.int8, torch.float8_e4m3fn):
        raise ValueError(f"weight must be int8 or float8_e4m3fn, got {weight.dtype}")
    return scaled_gemm_triton(x, weight, None, per_row(weight_scale, weight.shape[0], "weight_scale"), x.dtype)


def w8a16_gemm(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    if on_cuda(x, weight, weight_scale):
        return w8a16_gemm_triton(x, weight, weight_scale)
    return w8a16_gemm_ref(x, weight, weight_scale)
