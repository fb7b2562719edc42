import torch
from kvant.kernels.dispatch import on_cuda, per_row
from kvant.kernels.quant_rows import quant_rows_ref, quant_rows_triton
from kvant.kernels.scaled_gemm import scaled_gemm_triton

# "triton" (fused dequant epilogue) or "int_mm" (torch._int_mm + a torch epilogue); see bench/KERNELS.md
INT8_GEMM_BACKEND = "triton"


# ---- torch references ----
def quant_int8_per_token_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # x [M, K] -> (q int8 [M, K], scale fp32 [M, 1]); symmetric, round half to even
    return quant_rows_ref(x, torch.int8)


def int8_gemm_ref(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    # xq int8 [M, K], w int8 [N, K]: exact integer dot products (fp64 holds sums below 2^53 exactly; CUDA has no
    # int64 matmul), then fp32 scales and bias
    m, n = xq.shape[0], w.shape[0]
    acc = (xq.double() @ w.double().t()).float()
    out = acc * per_row(x_scale, m, "x_scale")[:, None] * per_row(w_scale, n, "w_scale")[None, :]
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)



# ---- Triton / cuBLASLt ----
def quant_int8_per_token_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quant_rows_triton(x, torch.int8)


def int8_gemm_triton(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    if xq.dtype != torch.int8 or w.dtype != torch.int8:
        raise ValueError(f"xq and w must be int8, got {xq.dtype} and {w.dtype}")
    m, n = xq.shape[0], w.shape[0]
    return scaled_gemm_triton(xq, w, per_row(x_scale, m, "x_scale"), per_row(w_scale, n, "w_scale"), out_dtype, bias)


def int8_gemm_int_mm(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    # torch._int_mm needs M > 16 and K, N multiples of 8; the epilogue is unfused torch
    m, n = xq.shape[0], w.shape[0]
    out = torch._int_mm(xq, w.t()).float() * per_row(x_scale, m, "x_scale")[:, None]
    out = out * per_row(w_scale, n, "w_scale")[None, :]
    return (out if bias is None else out + bias.float()).to(out_dtype)


def quant_int8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quant_int8_per_token_triton(x) if on_cuda(x) else quant_int8_per_token_ref(x)


def int8_gemm(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    if on_cuda(xq, x_scale, w, w_scale, bias):
        if INT8_GEMM_BACKEND == "int_mm" and xq.shape[0] > 16 and xq.shape[1] % 8 == 0 and w.shape[0] % 8 == 0:
            return int8_gemm_int_mm(xq, x_scale, w, w_scale, out_dtype, bias)
        return int8_gemm_triton(xq, x_scale, w, w_scale, out_dtype, bias)
    return int8_gemm_ref(xq, x_scale, w, w_scale, out_dtype, bias)
