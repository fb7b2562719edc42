"""16-bit GEMM for decode-sized inputs (a few to 64 rows): y = x @ w^T with w the nn.Linear weight [N, K].

cuBLAS reaches the bandwidth limit on most decode shapes but splits K for some of them and then launches a separate
reduce kernel (two per layer at batch 1 on Llama-3.1-8B), and runs a narrow o_proj at about half the copy rate. This
kernel is swap-AB (the weight tile is the MMA's wide operand, the few tokens the narrow one) and reduces its K splits
inside the kernel (kvant.kernels.splitk), so one launch gives the output. With `silu_mul` it takes the MLP's gate_up
output and applies SiLU·mul while loading its x tiles (the values of kvant.kernels.activation's kernel, bit for bit),
so down_proj(silu_and_mul(gate_up)) is one launch too. Whether it or cuBLAS runs a given shape and row count is
measured on the card at start-up (`pick`), never assumed."""
import functools
import json
import os
from pathlib import Path

import torch
import triton
import triton.language as tl

from kvant.kernels.activation import silu_and_mul, silu_and_mul_ref
from kvant.kernels.dispatch import interpreted, num_sms
from kvant.kernels.splitk import split_count, splitk_buffers

MAX_M = 64  # the largest row count this kernel is offered for
KERNEL_VERSION = 2  # in the on-disk table's keys: a changed kernel is measured again, never trusted from an old table
SMEM_BUDGET = 200 * 1024  # bytes of pipelined tiles a candidate may hold (Hopper has 227 KiB per block)


def skinny_gemm_ref(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                    silu_mul: bool = False) -> torch.Tensor:
    # fp32 accumulation, output in x's dtype; silu_mul: x is gate_up [M, 2K], activated (and rounded) first
    x = silu_and_mul_ref(x) if silu_mul else x
    y = x.float() @ w.float().t()
    return (y if bias is None else y + bias.float()).to(x.dtype)


@triton.jit
def _skinny_kernel(x_ptr, w_ptr, b_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, stride_xm, stride_wn, stride_om,
                   TILES_PER_SPLIT, SPLIT, HAS_BIAS: tl.constexpr, REDUCE: tl.constexpr, UPCAST: tl.constexpr,
                   SILU_MUL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # acc [BLOCK_N, BLOCK_M] = w tile [BLOCK_N, BLOCK_K] @ x tile^T [BLOCK_K, BLOCK_M], over this split's K tiles
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    first = pid_k * TILES_PER_SPLIT
    for t in range(first, tl.minimum(first + TILES_PER_SPLIT, tl.cdiv(K, BLOCK_K))):
        offs_k = t * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        w = tl.load(w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_k[None, :],
                    mask=mask_n[:, None] & mask_k[None, :], other=0.0, eviction_policy="evict_first")
        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
        mask_x = mask_m[:, None] & mask_k[None, :]
        if SILU_MUL:  # x is gate_up [M, 2K]: silu(gate) * up in fp32, rounded to x's dtype as the unfused kernel does
            g = tl.load(x_ptrs, mask=mask_x, other=0.0).to(tl.float32)
            u = tl.load(x_ptrs + K, mask=mask_x, other=0.0).to(tl.float32)
            x = (g * tl.sigmoid(g) * u).to(x_ptr.dtype.element_ty)
        else:
            x = tl.load(x_ptrs, mask=mask_x, other=0.0)
        if UPCAST:  # the interpreter's tl.dot mishandles bf16 operands
            acc += tl.dot(w.to(tl.float32), tl.trans(x.to(tl.float32)))
        else:
            acc += tl.dot(w, tl.trans(x))
    if HAS_BIAS:  # added once, by the split that starts at K = 0 (partials are summed afterwards)
        if pid_k == 0:
            acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
    out = out_ptr + offs_m[None, :] * stride_om + offs_n[:, None]
    mask = mask_n[:, None] & mask_m[None, :]
    if REDUCE:  # as kvant.kernels.splitk.store_or_reduce, with the split count a run-time value (fewer compiles)
        tile = tl.arange(0, BLOCK_N)[:, None] * BLOCK_M + tl.arange(0, BLOCK_M)[None, :]
        tile_id = pid_m * tl.num_programs(0) + pid_n
        base = ws_ptr + tile_id.to(tl.int64) * (SPLIT * BLOCK_N * BLOCK_M)
        tl.store(base + pid_k * (BLOCK_N * BLOCK_M) + tile, acc)
        tl.debug_barrier()  # every thread's partial is issued before the release below
        if tl.atomic_add(cnt_ptr + tile_id, 1, sem="acq_rel", scope="gpu") == SPLIT - 1:
            total = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
            for s in range(SPLIT):  # in split order: deterministic
                total += tl.load(base + s * (BLOCK_N * BLOCK_M) + tile, cache_modifier=".cg")
            tl.store(out, total.to(out_ptr.dtype.element_ty), mask=mask)
            tl.atomic_xchg(cnt_ptr + tile_id, 0, sem="relaxed", scope="gpu")
    else:
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


def block_m(m: int) -> int:
    return min(MAX_M, max(16, triton.next_power_of_2(m)))


def candidates(m: int, silu_mul: bool = False) -> list[tuple[int, int, int, int, int]]:
    """(BLOCK_N, BLOCK_K, num_warps, num_stages, waves) worth timing at m rows: the three tiles that won somewhere on
    the H200 (bench/RESULTS.md, 2026-12-06; 64x128/128x256 never did), each at one and two waves of programs (a
    run-time value: no extra compile). With silu_mul two x tiles (gate, up) are in flight per stage."""
    stages, x_tiles = 4, 2 if silu_mul else 1
    return [(bn, bk, 4, stages, waves) for bn, bk in ((64, 128), (64, 256), (128, 128)) for waves in (1, 2)
            if (bn + x_tiles * block_m(m)) * bk * 2 * stages <= SMEM_BUDGET]


def _check(x: torch.Tensor, w: torch.Tensor, silu_mul: bool) -> None:
    xk = 2 * w.shape[1] if silu_mul else w.shape[1]
    if x.dtype not in (torch.bfloat16, torch.float16) or w.dtype != x.dtype or x.dim() != 2 or x.shape[1] != xk:
        what = "x [M, 2K] (gate, up halves)" if silu_mul else "x [M, K]"
        raise ValueError(f"skinny_gemm_triton{' with silu_mul' if silu_mul else ''} needs 16-bit {what} and "
                         f"w [N, K] of the same dtype, got x {x.dtype} {tuple(x.shape)}, w {w.dtype} {tuple(w.shape)}")
    if x.shape[0] > MAX_M or w.stride(1) != 1:
        raise ValueError(f"skinny_gemm_triton takes at most {MAX_M} rows and a row-major weight, got {x.shape[0]} "
                         f"rows, weight strides {w.stride()}")


def skinny_gemm_triton(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                       config: tuple[int, int, int, int, int] = (64, 128, 4, 4, 2),
                       silu_mul: bool = False) -> torch.Tensor:
    """x [M, K] 16-bit (silu_mul: gate_up [M, 2K], gate then up), w [N, K] of x's dtype, bias [N] or None -> [M, N];
    M <= MAX_M."""
    _check(x, w, silu_mul)
    m, (n, k) = x.shape[0], w.shape
    x = x if x.stride(-1) == 1 else x.contiguous()
    bn, bk, warps, stages, waves = config
    bm = block_m(m)
    grid_mn = (triton.cdiv(n, bn), triton.cdiv(m, bm))
    split, per_split = split_count(triton.cdiv(k, bk), grid_mn[0] * grid_mn[1], num_sms(x.device), waves)
    ws, cnt = splitk_buffers(x.device, grid_mn[0] * grid_mn[1], split, bm * bn)
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    _skinny_kernel[(*grid_mn, split)](
        x, w, bias if bias is not None else w, out, ws, cnt, m, n, k, x.stride(0), w.stride(0), out.stride(0),
        per_split, split, HAS_BIAS=bias is not None, REDUCE=split > 1, UPCAST=interpreted(_skinny_kernel),
        SILU_MUL=silu_mul, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
    return out


# ---- which of cuBLAS and this kernel runs a shape, measured on the card and kept on disk ----
def table_path() -> Path:
    home = os.environ.get("KVANT_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvant"
    return Path(home) / "skinny_gemm.json"


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    try:
        return json.loads(table_path().read_text())
    except (OSError, ValueError):
        return {}


def _save() -> None:
    path = table_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(_table(), indent=0, sort_keys=True))
    tmp.replace(path)


def pick(w: torch.Tensor, m: int, has_bias: bool, timer=None, silu_mul: bool = False) -> tuple[int, ...] | None:
    """The config of this kernel that beat cuBLAS (torch.nn.functional.linear) on this card for w's shape and dtype
    at m rows, or None where cuBLAS was as fast or faster. Measured once per card and kept on disk. With silu_mul the
    fused kernel races the unfused pair (silu_and_mul, then this kernel's own pick or cuBLAS) in CUDA-graph replays
    and is kept under its own key."""
    n, k = w.shape
    key = (f"v{KERNEL_VERSION}|{torch.cuda.get_device_name(w.device)}|{str(w.dtype)[6:]}|K{k}|N{n}|m{m}|"
           f"{'bias' if has_bias else ''}{'|silu_mul' if silu_mul else ''}")
    table = _table()
    if key not in table:
        table[key] = _measure(w, m, has_bias, timer, silu_mul)
        _save()
    hit = table[key]
    return tuple(hit) if hit is not None else None


def _graph_timer(fn) -> float:
    """ms per call of fn replayed from a CUDA graph, as decode runs it: the gaps between launches count."""
    fn()  # compile, size the split-K buffers outside the graph
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return triton.testing.do_bench(graph.replay, warmup=3, rep=20, return_mode="median")


def _weight_copies(w: torch.Tensor) -> list[torch.Tensor]:
    # enough copies of w that one pass over them (256 MiB or more) cannot stay in L2 between passes
    n = min(16, -(-(256 << 20) // (w.numel() * w.element_size())))
    return [w] + [w.clone() for _ in range(n - 1)]


def _measure(w: torch.Tensor, m: int, has_bias: bool, timer=None, silu_mul: bool = False):
    gen = torch.Generator(device=w.device).manual_seed(0)
    x = torch.randn(m, w.shape[1] * (2 if silu_mul else 1), device=w.device, dtype=w.dtype, generator=gen)
    bias = torch.randn(w.shape[0], device=w.device, dtype=w.dtype, generator=gen) if has_bias else None
    linear = torch.nn.functional.linear
    if silu_mul:
        # the fused kernel saves launches, which only a CUDA-graph replay shows; it races what the engine runs
        # without it: SiLU·mul, then this kernel where it was picked for these rows, else cuBLAS
        plain = pick(w, m, has_bias, timer)
        ws = _weight_copies(w)
        timer = timer or _graph_timer
        if plain is None:
            baseline = lambda: [linear(silu_and_mul(x), wi, bias) for wi in ws][-1]  # noqa: E731
        else:
            baseline = lambda: [skinny_gemm_triton(silu_and_mul(x), wi, bias, plain) for wi in ws][-1]  # noqa: E731
        kernel = lambda c: [skinny_gemm_triton(x, wi, bias, c, True) for wi in ws][-1]  # noqa: E731
    else:
        timer = timer or (lambda fn: triton.testing.do_bench(fn, warmup=3, rep=10, return_mode="median"))
        baseline = lambda: linear(x, w, bias)  # noqa: E731
        kernel = lambda c: skinny_gemm_triton(x, w, bias, c)  # noqa: E731
    ref = baseline()
    best_t, best = timer(baseline), None
    for config in candidates(m, silu_mul):
        try:
            y = kernel(config)
            if not torch.allclose(y.float(), ref.float(), rtol=2e-2, atol=2e-2 * ref.abs().max().item()):
                continue  # a config that gives the wrong answer on this card is never picked
            t = timer(lambda c=config: kernel(c))
        except Exception:  # noqa: BLE001 - a config this card cannot compile or run is skipped
            continue
        if t < 0.97 * best_t:  # only a clear win replaces what runs without this kernel
            best_t, best = t, list(config)
    return best
