"""RoPE on q and k plus the KV-cache store in one kernel (Qwen3's per-head q/k RMSNorm folded in when given).

One program per token reads q, k and v straight from the merged qkv output (row strides, no split copies), writes the
rotated q to a new [T, Hq, D] tensor, and writes the rotated k and v into the paged cache at the token's slot
(skipped for slot -1), quantized to FP8 with the layer's per-tensor scales when the cache is FP8. Rotated k is never
materialized outside the cache: the paged attention kernels read k from there.
"""
import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import interpreted, on_cuda, scale_float
from kvant.kernels.formats import FP8
from kvant.kernels.kv_store import store_kvcache_ref
from kvant.kernels.quant_rows import FP8_MAX_TL, round_to_e4m3
from kvant.kernels.rmsnorm import rms_norm_ref
from kvant.kernels.rope import apply_rope_ref


def rope_store_kv_ref(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, k_scale=None, v_scale=None,
                      q_norm_weight=None, k_norm_weight=None, eps: float = 1e-6) -> torch.Tensor:
    # q [T, Hq, D], k/v [T, Hkv, D] (views of the qkv output are fine); returns rotated q [T, Hq, D]
    if q_norm_weight is not None:
        q, k = rms_norm_ref(q, q_norm_weight, eps), rms_norm_ref(k, k_norm_weight, eps)
    q, k = apply_rope_ref(q, k, positions, cos_sin)
    store_kvcache_ref(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
    return q


@triton.jit
def _load_heads(ptr, t, stride_t, heads, d, mask, HALF: tl.constexpr):
    src = ptr + t * stride_t + heads * 2 * HALF + d[None, :]
    return tl.load(src, mask=mask, other=0.0), tl.load(src + HALF, mask=mask, other=0.0)


@triton.jit
def _norm_heads(x1, x2, w_ptr, d, eps, HALF: tl.constexpr):
    # per-head RMSNorm in HF's order: fp32 normalise, round to the model dtype, times weight, round again
    h1, h2 = x1.to(tl.float32), x2.to(tl.float32)
    ms = (tl.sum(h1 * h1, axis=1) + tl.sum(h2 * h2, axis=1)) / (2 * HALF)
    inv = (1.0 / tl.sqrt(ms + eps))[:, None]
    w1 = tl.load(w_ptr + d).to(tl.float32)[None, :]
    w2 = tl.load(w_ptr + HALF + d).to(tl.float32)[None, :]
    y1 = ((h1 * inv).to(x1.dtype).to(tl.float32) * w1).to(x1.dtype)
    y2 = ((h2 * inv).to(x2.dtype).to(tl.float32) * w2).to(x2.dtype)
    return y1, y2


@triton.jit
def _rotate(x1, x2, cos, sin):
    # neox style on the two halves; returns fp32
    a, b = x1.to(tl.float32), x2.to(tl.float32)
    return a * cos - b * sin, b * cos + a * sin


@triton.jit
def _rotated_heads(ptr, t, stride_t, heads, d, mask, w_ptr, eps, cos, sin, QK_NORM: tl.constexpr,
                   HALF: tl.constexpr):
    # q or k of one token: load the halves, (per-head RMSNorm,) rotate; fp32 out
    x1, x2 = _load_heads(ptr, t, stride_t, heads, d, mask, HALF)
    if QK_NORM:
        x1, x2 = _norm_heads(x1, x2, w_ptr, d, eps, HALF)
    return _rotate(x1, x2, cos, sin)


@triton.jit
def _to_cache(x, scale, IS_FP8: tl.constexpr, EXACT_ROUND: tl.constexpr):
    # x already rounded to the model dtype, as the unfused path stores it (a bf16 cache takes it as is); fp8 caches
    # travel as uint8 bits
    # one return: the compiler checks every return statement's type, even in a branch that IS_FP8 removes
    if IS_FP8:
        y = tl.clamp(x.to(tl.float32) / scale, -FP8_MAX_TL, FP8_MAX_TL)
        if EXACT_ROUND:
            y = round_to_e4m3(y)
        out = y.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True)
    else:
        out = x
    return out


@triton.jit
def _rope_store_kernel(q_ptr, k_ptr, v_ptr, qo_ptr, kc_ptr, vc_ptr, pos_ptr, cs_ptr, slot_ptr, qw_ptr, kw_ptr,
                       stride_q, stride_k, stride_v, eps, k_scale, v_scale, HQ, HKV,
                       HALF: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HKV: tl.constexpr, QK_NORM: tl.constexpr,
                       IS_FP8: tl.constexpr, EXACT_ROUND: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    dtype = qo_ptr.dtype.element_ty
    pos = tl.load(pos_ptr + t).to(tl.int64)
    d = tl.arange(0, HALF)
    cos = tl.load(cs_ptr + pos * 2 * HALF + d)[None, :]
    sin = tl.load(cs_ptr + pos * 2 * HALF + HALF + d)[None, :]
    # q: [BLOCK_HQ, HALF] halves -> rotated q
    hq = tl.arange(0, BLOCK_HQ)[:, None]
    qmask = hq < HQ
    r1, r2 = _rotated_heads(q_ptr, t, stride_q, hq, d, qmask, qw_ptr, eps, cos, sin, QK_NORM, HALF)
    dst = qo_ptr + t * HQ * 2 * HALF + hq * 2 * HALF + d[None, :]
    tl.store(dst, r1.to(dtype), mask=qmask)
    tl.store(dst + HALF, r2.to(dtype), mask=qmask)
    slot = tl.load(slot_ptr + t)
    if slot >= 0:
        hk = tl.arange(0, BLOCK_HKV)[:, None]
        kmask = hk < HKV
        # new names: Triton refuses a branch that rebinds q's [BLOCK_HQ, HALF] values with k's [BLOCK_HKV, HALF]
        kr1, kr2 = _rotated_heads(k_ptr, t, stride_k, hk, d, kmask, kw_ptr, eps, cos, sin, QK_NORM, HALF)
        v1, v2 = _load_heads(v_ptr, t, stride_v, hk, d, kmask, HALF)
        cache = slot * HKV * 2 * HALF + hk * 2 * HALF + d[None, :]
        tl.store(kc_ptr + cache, _to_cache(kr1.to(dtype), k_scale, IS_FP8, EXACT_ROUND), mask=kmask)
        tl.store(kc_ptr + cache + HALF, _to_cache(kr2.to(dtype), k_scale, IS_FP8, EXACT_ROUND), mask=kmask)
        tl.store(vc_ptr + cache, _to_cache(v1, v_scale, IS_FP8, EXACT_ROUND), mask=kmask)
        tl.store(vc_ptr + cache + HALF, _to_cache(v2, v_scale, IS_FP8, EXACT_ROUND), mask=kmask)


def supported(head_dim: int) -> bool:
    """The kernel keeps each half of a head in one power-of-two block."""
    return head_dim >= 4 and head_dim & (head_dim - 1) == 0


def _rows(x: torch.Tensor, name: str) -> int:
    # [T, H, D] with heads packed (stride D, unit stride on D): a view of the qkv output qualifies
    if x.stride(-1) != 1 or x.stride(1) != x.shape[2]:
        raise ValueError(f"{name} must have packed heads (strides [*, {x.shape[2]}, 1]), got {tuple(x.stride())}")
    return x.stride(0)


def check_rope_store(q, k, v, cos_sin, k_cache, v_cache, q_norm_weight, k_norm_weight) -> tuple[int, int, int]:
    """The fused kernels' input rules (this one and the decode attention that folds it in); returns q/k/v row strides."""
    d, hkv = q.shape[2], k.shape[1]
    if not supported(d):
        raise ValueError(f"head_dim must be a power of two for the fused RoPE + KV store kernel, got {d}")
    if cos_sin.shape[-1] != d or cos_sin.dtype != torch.float32 or not cos_sin.is_contiguous():
        raise ValueError(f"cos_sin must be contiguous fp32 [max_pos, {d}], got {tuple(cos_sin.shape)} {cos_sin.dtype}")
    if k_cache.shape[2:] != (hkv, d) or not k_cache.is_contiguous() or not v_cache.is_contiguous():
        raise ValueError(f"k_cache must be contiguous [num_blocks, block_size, {hkv}, {d}], got {tuple(k_cache.shape)}")
    if (q_norm_weight is None) != (k_norm_weight is None):
        raise ValueError("q_norm_weight and k_norm_weight come together")
    return _rows(q, "q"), _rows(k, "k"), _rows(v, "v")


def rope_store_kv_triton(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, k_scale=None, v_scale=None,
                         q_norm_weight=None, k_norm_weight=None, eps: float = 1e-6) -> torch.Tensor:
    t, hq, d = q.shape
    hkv = k.shape[1]
    strides = check_rope_store(q, k, v, cos_sin, k_cache, v_cache, q_norm_weight, k_norm_weight)
    q_out = torch.empty(t, hq, d, dtype=q.dtype, device=q.device)
    is_fp8 = k_cache.dtype == FP8
    kc, vc = (k_cache.view(torch.uint8), v_cache.view(torch.uint8)) if is_fp8 else (k_cache, v_cache)
    qw = q_norm_weight if q_norm_weight is not None else q_out
    kw = k_norm_weight if k_norm_weight is not None else q_out
    if t:
        _rope_store_kernel[(t,)](q, k, v, q_out, kc, vc, positions, cos_sin, slot_mapping, qw, kw, *strides,
                                 float(eps), scale_float(k_scale), scale_float(v_scale), hq, hkv, HALF=d // 2,
                                 BLOCK_HQ=triton.next_power_of_2(hq), BLOCK_HKV=triton.next_power_of_2(hkv),
                                 QK_NORM=q_norm_weight is not None, IS_FP8=is_fp8,
                                 EXACT_ROUND=interpreted(_rope_store_kernel), num_warps=4)
    return q_out


def rope_store_kv(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, k_scale=None, v_scale=None,
                  q_norm_weight=None, k_norm_weight=None, eps: float = 1e-6) -> torch.Tensor:
    if on_cuda(q, k, v, positions, k_cache, slot_mapping) and supported(q.shape[-1]):
        return rope_store_kv_triton(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, k_scale, v_scale,
                                    q_norm_weight, k_norm_weight, eps)
    return rope_store_kv_ref(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, k_scale, v_scale,
                             q_norm_weight, k_norm_weight, eps)
