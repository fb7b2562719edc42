"""The CPU path of a step's attention: RoPE, the KV-cache store and attention over the paged cache, with what does
not change between layers (rotary rows, cache rows, masks) built once per step by `plan_cpu_step` instead of once
per layer. Values equal the references (`apply_rope_ref`, `store_kvcache_ref`, `paged_attention_*_ref` up to SDPA's
summation order); 16-bit caches only (an fp8 cache takes `paged_attention_*_torch`).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True, slots=True)
class CpuStep:
    cos: torch.Tensor  # [T, 1, D] fp32: cat(cos, cos) at each token's position
    sin: torch.Tensor  # [T, 1, D] fp32: cat(-sin, sin), so rope(x) = x * cos + swap_halves(x) * sin
    slot_mapping: torch.Tensor  # [T] int64 flat cache row of each new token (none is -1 on the CPU path)
    # how attention reads keys, one of:
    #   "self":   one sequence, no cached prefix: causal attention over this step's own k/v (no gather)
    #   "decode": one query per sequence: keys are flat cache rows `kv_rows` [L] (one sequence, a contiguous range)
    #             or kv_index [B, L] (gathered), `mask` [B, 1, 1, L] where lengths differ
    #   "paged":  anything else (several prompts, cached prefixes, chunks): paged_attention_prefill_torch
    mode: str
    kv_rows: slice | None = None
    kv_index: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def rope_tables(cos_sin: torch.Tensor, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    # cos_sin [max_pos, D] = cat(cos, sin) fp32 -> (cat(cos, cos), cat(-sin, sin)) [T, 1, D] at `positions`
    start = positions[0]
    contiguous = positions == list(range(start, start + len(positions)))
    cs = cos_sin[start:start + len(positions)] if contiguous else cos_sin[torch.tensor(positions)]
    half = cs.shape[-1] // 2
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)


def plan_cpu_step(cos_sin: torch.Tensor, positions: list[int], slots: list[int], q_lens: list[int],
                  context_lens: list[int], block_tables: list[list[int]], block_size: int) -> CpuStep:
    """The step's CpuStep from the host lists ModelRunner already holds (one entry per sequence, block tables
    unpadded)."""
    cos, sin = rope_tables(cos_sin, positions)
    common = dict(cos=cos, sin=sin, slot_mapping=torch.tensor(slots, dtype=torch.int64))
    if len(q_lens) == 1 and q_lens[0] == context_lens[0]:
        return CpuStep(mode="self", **common)
    if any(n != 1 for n in q_lens):
        return CpuStep(mode="paged", **common)
    rows = [_context_rows(t, n, block_size) for t, n in zip(block_tables, context_lens)]
    if len(rows) == 1 and rows[0] == list(range(rows[0][0], rows[0][0] + len(rows[0]))):
        return CpuStep(mode="decode", kv_rows=slice(rows[0][0], rows[0][0] + len(rows[0])), **common)
    width = max(context_lens)
    index = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], dtype=torch.int64)  # [B, L]
    mask = None
    if min(context_lens) != width:
        mask = (torch.arange(width)[None, :] < torch.tensor(context_lens)[:, None])[:, None, None, :]
    return CpuStep(mode="decode", kv_index=index, mask=mask, **common)


def _context_rows(table: list[int], length: int, block_size: int) -> list[int]:
    # flat cache rows (block * block_size + offset) of positions 0..length-1
    rows = [b * block_size + o for b in table[:-(-length // block_size)] for o in range(block_size)]
    return rows[:length]


def rope_cpu(x: torch.Tensor, step: CpuStep) -> torch.Tensor:
    """x [T, H, D] (any strides) -> neox RoPE of x in x.dtype, computed in fp32 as apply_rope_ref."""
    xf = x.float()
    half = x.shape[-1] // 2
    swapped = torch.cat([xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * step.cos + swapped * step.sin).to(x.dtype)


def attention_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  step: CpuStep, scale: float, fallback) -> torch.Tensor:
    """Stores this step's k/v [T, Hkv, D] in the caches [NB, bs, Hkv, D], then attends q [T, Hq, D] -> [T, Hq, D].
    `fallback()` computes the "paged" mode from the cache."""
    hkv, d = k.shape[1], k.shape[2]
    k_flat, v_flat = k_cache.view(-1, hkv, d), v_cache.view(-1, hkv, d)  # [NB * bs, Hkv, D]
    k_flat.index_copy_(0, step.slot_mapping, k)
    v_flat.index_copy_(0, step.slot_mapping, v)
    if step.mode == "self":
        # [1, H, T, D] views; SDPA reads the strides
        qh, kh, vh = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]
        o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=scale, enable_gqa=q.shape[1] != hkv)
        return o[0].transpose(0, 1)
    if step.mode == "paged":
        return fallback()
    b, hq = q.shape[0], q.shape[1]
    if step.kv_rows is not None:
        kh, vh = k_flat[step.kv_rows].transpose(0, 1)[None], v_flat[step.kv_rows].transpose(0, 1)[None]  # views
    else:
        kh = k_flat[step.kv_index].transpose(1, 2)  # [B, Hkv, L, D]
        vh = v_flat[step.kv_index].transpose(1, 2)
    # one query per sequence: the group's query heads become query rows of their kv head (no repeated keys)
    qh = q.reshape(b, hkv, hq // hkv, d)  # [B, Hkv, G, D]
    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=step.mask, scale=scale)
    return o.reshape(b, hq, d)
