import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import interpreted, on_cuda, scale_float, scale_value
from kvant.kernels.formats import FP8, FP8_MAX
from kvant.kernels.quant_rows import FP8_MAX_TL, round_to_e4m3


def quant_kv_ref(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in the cache dtype: fp8 caches store x / scale, saturated to the fp8 range."""
    if dtype == FP8:
        return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return x.to(dtype)


def store_kvcache_ref(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      slot_mapping: torch.Tensor, k_scale=None, v_scale=None) -> None:
    # k, v [T, Hkv, D]; caches [num_blocks, block_size, Hkv, D]; slot = block * block_size + offset, -1 = skip
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    ks, vs = scale_value(k_scale, k.device), scale_value(v_scale, v.device)
    k_cache.view(-1, *k_cache.shape[2:])[slots] = quant_kv_ref(k[keep], ks, k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = quant_kv_ref(v[keep], vs, v_cache.dtype)


@triton.jit
def _store_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr, k_scale, v_scale, stride_k, stride_v,
                  HD: tl.constexpr, BLOCK: tl.constexpr, IS_FP8: tl.constexpr,
                  EXACT_ROUND: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t)
    if slot < 0:
        return
    offs = tl.arange(0, BLOCK)
    mask = offs < HD
    k = tl.load(k_ptr + t.to(tl.int64) * stride_k + offs, mask=mask)
    v = tl.load(v_ptr + t.to(tl.int64) * stride_v + offs, mask=mask)
    if IS_FP8:
        k = tl.clamp(k.to(tl.float32) / k_scale, -FP8_MAX_TL, FP8_MAX_TL)
        v = tl.clamp(v.to(tl.float32) / v_scale, -FP8_MAX_TL, FP8_MAX_TL)
        if EXACT_ROUND:
            k, v = round_to_e4m3(k), round_to_e4m3(v)
        # fp8 caches travel as uint8 bits
        k = k.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True)
        v = v.to(tl.float8e4nv, fp_downcast_rounding="rtne").to(tl.uint8, bitcast=True)
    dst = slot * HD + offs
    tl.store(kc_ptr + dst, k.to(kc_ptr.dtype.element_ty), mask=mask)
    tl.store(vc_ptr + dst, v.to(vc_ptr.dtype.element_ty), mask=mask)


def store_kvcache_triton(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                         slot_mapping: torch.Tensor, k_scale=None, v_scale=None) -> None:
    t, hkv, d = k.shape
    if k_cache.shape[2:] != (hkv, d) or not k_cache.is_contiguous() or not v_cache.is_contiguous():
        raise ValueError(f"k_cache must be contiguous [num_blocks, block_size, {hkv}, {d}], "
                         f"got {tuple(k_cache.shape)}")
    k2, v2 = k.reshape(t, hkv * d), v.reshape(t, hkv * d)
    if k2.stride(-1) != 1:
        k2 = k2.contiguous()
    if v2.stride(-1) != 1:
        v2 = v2.contiguous()
    is_fp8 = k_cache.dtype == FP8
    kc, vc = (k_cache.view(torch.uint8), v_cache.view(torch.uint8)) if is_fp8 else (k_cache, v_cache)
    if t:
        _store_kernel[(t,)](k2, v2, kc, vc, slot_mapping, scale_float(k_scale), scale_float(v_scale), k2.stride(0),
                            v2.stride(0), HD=hkv * d, BLOCK=triton.next_power_of_2(hkv * d), IS_FP8=is_fp8,
                            EXACT_ROUND=interpreted(_store_kernel))


def store_kvcache(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  slot_mapping: torch.Tensor, k_scale=None, v_scale=None) -> None:
    if on_cuda(k, v, k_cache, v_cache, slot_mapping):
        store_kvcache_triton(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
    else:
        store_kvcache_ref(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
