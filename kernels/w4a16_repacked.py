"""W4A16 GEMM on the repacked layout (kvant.kernels.w4a16_layout), dispatched by row count: the CUDA-core GEMV for
1..4 rows, the swap-AB tensor-core tile for 5..256, dequantize + vendor GEMM beyond (prefill, compute-bound)."""
import torch

from kvant.kernels.dispatch import on_cuda
from kvant.kernels.w4a16_fast_gemv import MAX_ROWS, w4a16_fast_gemv_triton
from kvant.kernels.w4a16_layout import MAGIC16, check_repacked, w4a16_repacked_gemm_ref
from kvant.kernels.w4a16_swapab import w4a16_repacked_dequant_mm, w4a16_swapab_triton

GEMV_MAX_M = MAX_ROWS
SWAPAB_MAX_M = 256


def w4a16_repacked_gemm(x, qweight, scales, group_size, zeros=None) -> torch.Tensor:
    # x [M, K] 16-bit -> [M, N]; the torch reference where any operand is off the GPU
    check_repacked(x, qweight, scales, group_size, zeros)
    if not on_cuda(x, qweight, scales, zeros):
        return w4a16_repacked_gemm_ref(x, qweight, scales, group_size, zeros)
    m = x.shape[0]
    if x.dtype not in MAGIC16:  # fp32 activations: dequantize (exactly, in fp32) + GEMM
        return w4a16_repacked_dequant_mm(x, qweight, scales, group_size, zeros)
    if m <= GEMV_MAX_M and group_size & (group_size - 1) == 0:
        return w4a16_fast_gemv_triton(x, qweight, scales, group_size, zeros)
    if m <= SWAPAB_MAX_M and group_size % 16 == 0:
        return w4a16_swapab_triton(x, qweight, scales, group_size, zeros)
    return w4a16_repacked_dequant_mm(x, qweight, scales, group_size, zeros)
