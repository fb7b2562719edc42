import torch
from kvant.kernels.dispatch import on_cuda, per_row
from kvant.kernels.formats import FP8, FP8_MAX
from kvant.kernels.quant_rows import quant_rows_ref, quant_rows_triton
from kvant.kernels.scaled_gemm import scaled_gemm_triton

# "scaled_mm" (cuBLASLt via torch._scaled_mm) or "triton"; bench/KERNELS.md has the measurement behind the choice
FP8_GEMM_BACKEND = "scaled_mm"
# up to this many rows kvant's split-K GEMM runs even with the "scaled_mm" backend: at 64 rows it beat cuBLASLt on
# Llama-3.1-8B's o and down (1.27x / 1.61x bf16 against 1.12x / 1.26x); with FP8 operands loaded as FP8 it took
# 117.5 us on the four shapes at 128 rows against cuBLASLt's 120.1, and 145.1 against 136.2 at 256 (H100,
# bench/RESULTS.md, 2026-12-07)
FP8_TRITON_MAX_M = 128


# ---- torch references ----
def quant_fp8_per_token_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # x [M, K] -> (q fp8 [M, K], scale fp32 [M, 1]) with x ~= q * scale
    return quant_rows_ref(x, FP8)


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



# ---- Triton / cuBLASLt ----
def quant_fp8_per_token_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quant_rows_triton(x, FP8)


def quant_fp8_per_tensor_triton(x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quant_rows_triton(x, FP8, static_scale=scale)


def fp8_gemm_triton(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    if xq.dtype != FP8 or w.dtype != FP8:
        raise ValueError(f"xq and w must be float8_e4m3fn, got {xq.dtype} and {w.dtype}")
    m, n = xq.shape[0], w.shape[0]
    return scaled_gemm_triton(xq, w, per_row(x_scale, m, "x_scale"), per_row(w_scale, n, "w_scale"), out_dtype, bias)


def fp8_gemm_scaled_mm(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    # cuBLASLt row-wise scaled FP8 GEMM; w.t() of a row-major [N, K] weight is the column-major operand it wants
    m, n = xq.shape[0], w.shape[0]
    out = torch._scaled_mm(xq, w.t(), scale_a=per_row(x_scale, m, "x_scale")[:, None],
                           scale_b=per_row(w_scale, n, "w_scale")[None, :], out_dtype=out_dtype)
    return out if bias is None else out + bias.to(out_dtype)


def _scaled_mm_ok(xq: torch.Tensor, w: torch.Tensor, out_dtype: torch.dtype) -> bool:
    return (FP8_GEMM_BACKEND == "scaled_mm" and xq.shape[0] > FP8_TRITON_MAX_M and out_dtype == torch.bfloat16
            and xq.shape[1] % 16 == 0
            and w.shape[0] % 16 == 0 and torch.cuda.get_device_capability(xq.device) >= (8, 9))


def quant_fp8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quant_fp8_per_token_triton(x) if on_cuda(x) else quant_fp8_per_token_ref(x)


def quant_fp8_per_tensor(x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return quant_fp8_per_tensor_triton(x, scale) if on_cuda(x) else quant_fp8_per_tensor_ref(x, scale)


def fp8_gemm(xq, x_scale, w, w_scale, out_dtype, bias=None) -> torch.Tensor:
    if on_cuda(xq, x_scale, w, w_scale, bias):
        if _scaled_mm_ok(xq, w, out_dtype):
            return fp8_gemm_scaled_mm(xq, x_scale, w, w_scale, out_dtype, bias)
        return fp8_gemm_triton(xq, x_scale, w, w_scale, out_dtype, bias)
    return fp8_gemm_ref(xq, x_scale, w, w_scale, out_dtype, bias)
