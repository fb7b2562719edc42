"""One tiled Triton GEMM `out = (a @ b.T) * row_scale * col_scale + bias` shared by the W8A16, FP8 and INT8 paths.
At decode sizes it splits K and reduces the splits inside the kernel (kvant.kernels.splitk): one launch, no zero-fill
of an fp32 buffer and no cast of it afterwards."""
import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import interpreted, num_sms, pdl_enter, pdl_launch
from kvant.kernels.splitk import split_count, splitk_buffers, store_or_reduce


@triton.jit
def _scaled_gemm_kernel(a_ptr, b_ptr, rs_ptr, cs_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, stride_am, stride_bn,
                        stride_om, TILES_PER_SPLIT, A_FP8: tl.constexpr, B_FP8: tl.constexpr, CONVERT_B: tl.constexpr,
                        HAS_ROW_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, INT_ACC: tl.constexpr, SPLIT: tl.constexpr,
                        UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        GROUP_M: tl.constexpr, PDL: tl.constexpr = False):
    pdl_enter(PDL)
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    # grouped tile order: GROUP_M row tiles share each weight tile while it is in L2
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    first_m = (pid // (GROUP_M * num_n)) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % size_m
    pid_n = (pid % (GROUP_M * num_n)) // size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    a_rows = a_ptr + offs_m[:, None].to(tl.int64) * stride_am
    b_rows = b_ptr + offs_n[:, None].to(tl.int64) * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if INT_ACC else tl.float32)
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, tl.cdiv(K, BLOCK_K))):
        offs_k = t * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a = tl.load(a_rows + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(b_rows + offs_k[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0)  # [BLOCK_N, BLOCK_K]
        if A_FP8:  # fp8 as uint8 bits (the interpreter has no fp8 loads); zero bits are 0.0
            a = a.to(tl.float8e4nv, bitcast=True)
        if B_FP8:
            b = b.to(tl.float8e4nv, bitcast=True)
        if CONVERT_B:  # weight-only: int8 / fp8 values are exact in 16 bits
            b = b.to(tl.float32)
            if not UPCAST:
                b = b.to(a.dtype)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if INT_ACC:
            acc = tl.dot(a, tl.trans(b), acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(a, tl.trans(b), acc)
    out = acc.to(tl.float32) * tl.load(cs_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    if HAS_ROW_SCALE:
        out = out * tl.load(rs_ptr + offs_m, mask=mask_m, other=0.0)[:, None]
    if HAS_BIAS:
        if pid_k == 0:
            out = out + tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    dst = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    store_or_reduce(out, dst, mask_m[:, None] & mask_n[None, :], ws_ptr, cnt_ptr, pid, pid_k, SPLIT, BLOCK_M, BLOCK_N)


def default_config(m: int, dtype: torch.dtype, n: int = 0, k: int = 0, sms: int = 132) -> tuple[int, ...]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, waves) for an [m, k] x [k, n] product with `dtype`
    activations on a card with `sms` SMs; waves as in scaled_gemm_triton (0: no split-K)."""
    wide = dtype.itemsize == 1  # 8-bit operands: twice the K per tile for the same shared memory
    if m <= 16:  # decode: bandwidth bound on the weight, split K so that every SM streams it
        return 16, 64, 256 if wide else 128, 4, 4, default_waves(m)
    if wide and m <= 256:
        # a busy decode step, 8-bit (bench/w8a8_mid_sweep.py on an H100, Llama-3.1-8B's shapes, bench/RESULTS.md):
        # one big tile where the output alone fills the card (gate_up), else small tiles and split-K, two waves
        # where K is long enough for it (down)
        big = 128 if m > 64 else 64
        if triton.cdiv(m, big) * triton.cdiv(n, 128) >= sms * (1 if m <= 128 else 2):
            return (128, 128, 128, 8, 3, 0) if big == 128 else (64, 128, 128, 4, 4, 0)
        waves = 2 if k >= 8192 else 1
        return (64, 64, 128, 4, 4, waves) if m <= 128 else (64, 128, 128, 4, 4, waves)
    if m <= 64:
        return 64, 128, 128 if wide else 64, 4, 4, default_waves(m)
    if dtype == torch.float8_e4m3fn:  # fastest of four tile shapes swept at M=4096 (bench/KERNELS.md)
        return 256, 128, 128, 8, 3, default_waves(m)
    return 128, 128, 128 if wide else 64, 8, 3, default_waves(m)


def default_waves(m: int) -> int:
    # split-K target (programs per SM) where the output tiles are fewer than that: decode rows stream the weight from
    # every SM twice over; at a busy step's 17-256 rows Llama-3.1-8B's qkv, o and down have only 32-96 output tiles
    # for 132 SMs, so K is split to fill them once; prefill-sized M fills the card without it
    return 2 if m <= 16 else 1 if m <= 256 else 0


def scaled_gemm_triton(a: torch.Tensor, b: torch.Tensor, row_scale: torch.Tensor | None, col_scale: torch.Tensor,
                       out_dtype: torch.dtype, bias: torch.Tensor | None = None,
                       config: tuple[int, ...] | None = None) -> torch.Tensor:
    # a [M, K], b [N, K] (K contiguous); row_scale fp32 [M] or None; col_scale fp32 [N]; -> [M, N] out_dtype.
    # config (bench sweeps): (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages[, waves]); waves > 0 splits K for
    # about that many programs per SM where the output tiles are fewer (kvant.kernels.splitk), 0 never splits
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k:
        raise ValueError(f"weight must have K={k} columns, got shape {tuple(b.shape)}")
    a = a if a.stride(-1) == 1 else a.contiguous()
    b = b if b.stride(-1) == 1 else b.contiguous()
    convert_b = a.dtype in (torch.bfloat16, torch.float16, torch.float32) and b.dtype != a.dtype
    int_acc = a.dtype == torch.int8
    if config is None:
        config = default_config(m, a.dtype, n, k, num_sms(a.device))
    bm, bn, bk, warps, stages, waves = config if len(config) == 6 else (*config, default_waves(m))
    num_tiles = triton.cdiv(k, bk)
    tiles_mn = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    split, per_split = split_count(num_tiles, tiles_mn, num_sms(a.device), waves) if waves else (1, num_tiles)
    out = torch.empty(m, n, dtype=out_dtype, device=a.device)
    if m == 0 or n == 0:
        return out
    ws, cnt = splitk_buffers(a.device, tiles_mn, split, bm * bn)
    # on the GPU fp8 operands load as fp8, so that both go from shared memory straight into the wgmma (a bitcast after
    # the load kept A in registers: an sm_90 compile shows a shared-memory load back into registers); the interpreter
    # gets their uint8 bits
    interp = interpreted(_scaled_gemm_kernel)
    a_fp8, b_fp8 = interp and a.dtype == torch.float8_e4m3fn, interp and b.dtype == torch.float8_e4m3fn
    a, b = (a.view(torch.uint8) if a_fp8 else a), (b.view(torch.uint8) if b_fp8 else b)
    upcast = interp and torch.bfloat16 in (a.dtype, b.dtype)
    _scaled_gemm_kernel[(tiles_mn, split)](
        a, b, row_scale if row_scale is not None else col_scale, col_scale, bias if bias is not None else col_scale,
        out, ws, cnt, m, n, k, a.stride(0), b.stride(0), out.stride(0), per_split, A_FP8=a_fp8, B_FP8=b_fp8,
        CONVERT_B=convert_b, HAS_ROW_SCALE=row_scale is not None, HAS_BIAS=bias is not None, INT_ACC=int_acc, SPLIT=split,
        UPCAST=upcast, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_warps=warps, num_stages=stages,
        **pdl_launch(a.device))
    return out
