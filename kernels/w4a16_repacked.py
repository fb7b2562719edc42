"""W4A16 GEMM on the repacked layout (kvant.kernels.w4a16_layout), dispatched by row count: the tensor-core GEMV at
1-64 rows and for all but the largest weights at 65-256 rows (g64 and up), the async-wgmma tile for the largest at
65-256 rows on sm_90 when turned on (its warp-specialized form past 128 rows), the swap-AB tile, then the wide tile
(tokens as the MMA's 64-row side) for large weights from 33 rows and for every weight at 65-128 rows, dequantize +
vendor GEMM beyond, unless kvant.kernels.w4a16_tune's on-disk table has a measured pick for the card, shape and row
bucket (`tune(..., repacked=True)` fills it)."""
import os

import torch

from kvant.kernels import w4a16_wgmma, w4a16_wgmma_ws
from kvant.kernels.activation import silu_and_mul
from kvant.kernels.dispatch import on_cuda
from kvant.kernels.w4a16_fast_gemv import w4a16_fast_gemv_triton
from kvant.kernels.w4a16_mma_gemv import w4a16_mma_gemv_triton
from kvant.kernels.w4a16_layout import MAGIC16, check_repacked, w4a16_repacked_gemm_ref
from kvant.kernels.w4a16_swapab import w4a16_repacked_dequant_mm, w4a16_swapab_triton, w4a16_wide_triton
from kvant.kernels.w4a16_tune import lookup

# H200 table of 2026-12-05 (bench/RESULTS.md), Llama-3.1-8B shapes: swap-AB beat the checkpoint-layout kernels at
# 4-64 rows (4 rows 0.93-1.29x bf16 against 0.85-1.02x); at 256 rows dequantize + cuBLAS beat it (0.51-0.67x against
# 0.42-0.50x); 65..255 rows were not measured, so the bound sits between. One row: the one-row GEMV, 1.62x (planes)
# and 1.74x (pairs, the default) bf16 cuBLAS on qkv in the H100 table of 2026-12-05 (bench/RESULTS.md).
GEMV_MAX_M = 1
# The tensor-core GEMV (kvant.kernels.w4a16_mma_gemv) at 1-64 rows, g64 and up, and at 65-256 rows for weights below
# MMA_GEMV_MAX_WEIGHT: in the H100 sweeps of 2026-12-07 (bench/w4a16_gemv_sweep.py, bench/w4a16_wide_sweep.py) on
# Llama-3.1-8B's g128 shapes it was the fastest INT4 kernel at 1-64 rows on every shape (2.1-2.7x bf16 cuBLAS at
# 16-32 rows, where swap-AB ran 1.15-1.66x; 1.02-1.70x at 64 against the wide tile's 0.94-1.49x) and at 128 rows on
# qkv, o and down (0.69-0.96x against 0.65-0.90x), not on gate_up (0.90x against 1.05x). In 64-token tiles with each
# block scaled in 16 bits (w4a16_mma_gemv.default_config) it was the fastest at 128 and 256 rows on qkv, o and down
# (the fourth session's sweep; down at 256 rows within 5 %). At g32 it was about 20 % slower than the older kernels
# at one row, so g32 keeps them.
MMA_GEMV_MAX_M, MMA_GEMV_MAX_M_SMALL, MMA_GEMV_MAX_WEIGHT = 64, 256, 96 << 20
# SiLU·mul inside the GEMV costs a sigmoid per x element per program (every column tile recomputes it), so it is fused
# only where that is a few thousand elements per program (decode rows)
SILU_FUSE_MAX_M = 4
SWAPAB_MAX_M = 128
# The wide tile in the H100 sweep of 2026-12-07 (bench/w4a16_wide_sweep.py, bench/RESULTS.md), Llama-3.1-8B g128: at
# 64 rows it beat swap-AB on gate_up (1.38x bf16 cuBLAS against 1.20x) and down (1.28x against 1.11x) but not on qkv
# and o; at 128 rows it was the fastest INT4 kernel on all four shapes; at 256 rows on gate_up and down (0.62x and
# 0.66x against dequantize + cuBLAS's 0.46x and 0.50x), not on qkv and o. Large = at least WIDE_MIN_WEIGHT weights
# (gate_up 117M, down 59M; qkv 25M, o 17M).
WIDE_MIN_M, WIDE_MAX_M, WIDE_MIN_WEIGHT = 33, 256, 48 << 20
# The Gluon async-wgmma tile (kvant.kernels.w4a16_wgmma, sm_90 only) for the largest weights at 65-256 rows: on
# Llama-3.1-8B's gate_up (117M weights, g128) it beat the kernel above at 128 and 256 rows in the sweeps of
# 2026-12-07 (bench/w4a16_wgmma_sweep.py; H200 1.21x and 1.26x, H100 1.16x and 1.21x), with 128-token tiles, three
# stages and no split-K past 128 rows; it lost on qkv, o and down (17-59M weights) and at 64 rows and below.
# Past 128 rows its warp-specialized form (kvant.kernels.w4a16_wgmma_ws: one warpgroup dequantizes while two issue
# the wgmmas) takes over: on gate_up at 256 rows it ran 112 us against the single-partition tile's 127 and the
# dispatch's 159 (H100 sweep of 2026-12-07, 0.90x bf16 cuBLAS), and lost at 128 rows (97 against 84).
# Off by default: with its fix for fp32 scales (the INT4 engine's fault of 2026-12-07) it passed the GPU tests and ran
# through the INT4 engine (H100), but no A/B against the engine without it has run yet. KVANT_WGMMA=1 turns it on.
WGMMA = os.environ.get("KVANT_WGMMA", "0") == "1"
WGMMA_MIN_M, WGMMA_MAX_M, WGMMA_MIN_WEIGHT = 65, 256, 96 << 20
WGMMA_WS_MIN_M = 129


def _wgmma_pick(m: int, x, qweight, scales, group_size, zeros):
    if m >= WGMMA_WS_MIN_M and w4a16_wgmma_ws.supported(x, qweight, scales, group_size, zeros):
        return w4a16_wgmma_ws.w4a16_wgmma_ws, (128, 8, 4, 2, 1, 256)
    if w4a16_wgmma.supported(x, qweight, scales, group_size, zeros):
        return w4a16_wgmma.w4a16_wgmma, (128, 8, 3, 1, 128 if m <= 128 else 256)
    return None


def _pick(x, qweight, scales, group_size, zeros):
    # (kernel, config or None) for 16-bit x on the GPU: the tuned table's measured pick, else the static dispatch
    tuned = lookup(x, qweight, group_size, zeros, repacked=True)
    if tuned is not None:  # measured on this card for this shape and row bucket (kvant.kernels.w4a16_tune)
        return tuned
    m = x.shape[0]
    if WGMMA and WGMMA_MIN_M <= m <= WGMMA_MAX_M and qweight.shape[0] * x.shape[1] >= WGMMA_MIN_WEIGHT:
        wgmma = _wgmma_pick(m, x, qweight, scales, group_size, zeros)
        if wgmma is not None:
            return wgmma
    pow2 = group_size & (group_size - 1) == 0
    if pow2 and group_size >= 64 and (m <= MMA_GEMV_MAX_M or (
            m <= MMA_GEMV_MAX_M_SMALL and qweight.shape[0] * x.shape[1] < MMA_GEMV_MAX_WEIGHT)):
        return w4a16_mma_gemv_triton, None
    if m <= GEMV_MAX_M and pow2:
        return w4a16_fast_gemv_triton, None
    if group_size % 16 == 0 and WIDE_MIN_M <= m <= WIDE_MAX_M and (
            qweight.shape[0] * x.shape[1] >= WIDE_MIN_WEIGHT or 64 < m <= SWAPAB_MAX_M):
        return w4a16_wide_triton, None
    if m <= SWAPAB_MAX_M and group_size % 16 == 0:
        return w4a16_swapab_triton, None
    return w4a16_repacked_dequant_mm, None


def w4a16_repacked_gemm(x, qweight, scales, group_size, zeros=None) -> torch.Tensor:
    # x [M, K] 16-bit -> [M, N]; the torch reference where any operand is off the GPU
    check_repacked(x, qweight, scales, group_size, zeros)
    if not on_cuda(x, qweight, scales, zeros):
        return w4a16_repacked_gemm_ref(x, qweight, scales, group_size, zeros)
    if x.dtype not in MAGIC16:  # fp32 activations: dequantize (exactly, in fp32) + GEMM
        return w4a16_repacked_dequant_mm(x, qweight, scales, group_size, zeros)
    return _run(*_pick(x, qweight, scales, group_size, zeros), x, qweight, scales, group_size, zeros)


def _run(kernel, config, x, qweight, scales, group_size, zeros):
    if config is None:
        return kernel(x, qweight, scales, group_size, zeros)
    return kernel(x, qweight, scales, group_size, zeros, config=config)


def w4a16_repacked_silu_mul_gemm(gate_up, qweight, scales, group_size, zeros=None) -> torch.Tensor:
    """down_proj(silu_and_mul(gate_up)): gate_up [M, 2K] 16-bit -> [M, N]. Where the dispatch picks the tensor-core
    GEMV, SiLU·mul runs inside it as it loads x (one launch, the same result); elsewhere SiLU·mul runs first."""
    k = qweight.shape[1] * 8
    if gate_up.dim() == 2 and gate_up.shape[1] == 2 * k and gate_up.dtype in MAGIC16 and on_cuda(
            gate_up, qweight, scales, zeros):
        kernel, config = _pick(gate_up[:, :k], qweight, scales, group_size, zeros)
        if kernel is w4a16_mma_gemv_triton and gate_up.shape[0] <= SILU_FUSE_MAX_M:
            return kernel(gate_up, qweight, scales, group_size, zeros, config=config, silu_mul=True)
        return _run(kernel, config, silu_and_mul(gate_up), qweight, scales, group_size, zeros)  # picked once
    return w4a16_repacked_gemm(silu_and_mul(gate_up), qweight, scales, group_size, zeros)
