import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import on_cuda, scale_float, scale_value

FP8 = torch.float8_e4m3fn


# ---- torch references ----
def _gather_kv(cache: torch.Tensor, blocks: torch.Tensor, length: int, scale, dtype: torch.dtype) -> torch.Tensor:
    # cache [num_blocks, block_size, Hkv, D] -> [length, Hkv, D] in `dtype` (fp8 dequantised with its scale)
    x = cache[blocks.long()].reshape(-1, *cache.shape[2:])[:length]
    if cache.dtype == FP8:
        return (x.float() * scale_value(scale, x.device)).to(dtype)
    return x.to(dtype)


def _attend_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, scale: float) -> torch.Tensor:
    # q [Tq, Hq, D] at positions q_pos [Tq]; k/v [L, Hkv, D]; causal in absolute positions; fp32 softmax
    group = q.shape[1] // k.shape[1]
    k = k.float().repeat_interleave(group, dim=1)
    v = v.float().repeat_interleave(group, dim=1)
    s = torch.einsum("qhd,khd->hqk", q.float(), k) * scale  # [Hq, Tq, L]
    allowed = torch.arange(k.shape[0], device=q.device)[None, :] <= q_pos[:, None]  # [Tq, L]
    s = s.masked_fill(~allowed[None], float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(s, dim=-1), v).to(q.dtype)


def paged_attention_decode_ref(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale=None, v_scale=None):
    # q [B, Hq, D] -> [B, Hq, D]; each query sits at position context_lens[b] - 1
    out = torch.empty_like(q)
    bs = k_cache.shape[1]
    for b in range(q.shape[0]):
        length = int(context_lens[b])
        blocks = block_tables[b, : (length + bs - 1) // bs]
        k = _gather_kv(k_cache, blocks, length, k_scale, q.dtype)
        v = _gather_kv(v_cache, blocks, length, v_scale, q.dtype)
        pos = torch.tensor([length - 1], device=q.device)
        out[b] = _attend_ref(q[b : b + 1], k, v, pos, scale)[0]
    return out


def paged_attention_prefill_ref(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                                k_scale=None, v_scale=None):
    # q [T, Hq, D] -> [T, Hq, D]; query i of sequence b sits at context_lens[b] - q_len_b + i
    out = torch.empty_like(q)
    bs = k_cache.shape[1]
    for b in range(len(context_lens)):
        start, end, length = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]), int(context_lens[b])
        blocks = block_tables[b, : (length + bs - 1) // bs]
        k = _gather_kv(k_cache, blocks, length, k_scale, q.dtype)
        v = _gather_kv(v_cache, blocks, length, v_scale, q.dtype)
        pos = torch.arange(length - (end - start), length, device=q.device)
        out[start:end] = _attend_ref(q[start:end], k, v, pos, scale)
    return out


def paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale=None, v_scale=None):
    if on_cuda(q, k_cache, v_cache, block_tables, context_lens):
        return paged_attention_decode_triton(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale, v_scale)
    return paged_attention_decode_ref(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale, v_scale)


def paged_attention_prefill(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                            k_scale=None, v_scale=None):
    if on_cuda(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables):
        return paged_attention_prefill_triton(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                                              k_scale, v_scale)
    return paged_attention_prefill_ref(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                                       k_scale, v_scale)
