import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kvant.kernels.dispatch import interpreted, num_sms, on_cuda, pdl_enter, pdl_launch, scale_float, scale_value
from kvant.kernels.formats import FP8
from kvant.kernels.rope_store import _to_cache, check_rope_store, rope_store_kv_ref
from kvant.kernels.splitk import splitk_buffers

LOG2E = 1.4426950408889634
# Decode attention's split-KV knobs (bench/decode_attn_sweep.py times them; the environment variables are for A/B
# runs of whole engines): the most splits per (sequence, kv head), and whether the last split to arrive merges all the
# group's query heads in one tile or one head at a time. H100, Llama-3.1-8B heads, 2026-12-06 (bench/RESULTS.md): at
# batch 1 and 192 tokens 16 splits and the one-tile merge take 6.4 us per layer, 64 splits and the per-head merge
# 11.5 us; at 2,048 tokens 10.5 against 15.6 us; batch 64 is one split either way. Contexts past 2,048 tokens at
# batch 1 were not timed.
MAX_SPLITS = int(os.environ.get("KVANT_ATTN_MAX_SPLITS", "16"))
MERGE3D = os.environ.get("KVANT_ATTN_MERGE3D", "1") == "1"


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


# ---- batched torch path (CPU): sequences of similar size share one SDPA call over their gathered blocks ----
PAD_SLACK = 1.5  # a group's padded score matrix may be this much larger than its sequences' own ones
GROUP_MAX_SCORES = 1 << 24  # score elements per head in one call (64 MiB of fp32 per head)


def _length_groups(q_lens: list[int], ctx_lens: list[int]) -> list[list[int]]:
    """Sequence indices grouped so that padding every member to the group's longest costs little."""
    order = sorted(range(len(q_lens)), key=lambda i: (q_lens[i], ctx_lens[i]))
    groups, cur, own, tq, tk = [], [], 0, 0, 0
    for i in order:
        ntq, ntk, nown = max(tq, q_lens[i]), max(tk, ctx_lens[i]), own + q_lens[i] * ctx_lens[i]
        padded = (len(cur) + 1) * ntq * ntk
        if cur and (padded > PAD_SLACK * nown + 4096 or padded > GROUP_MAX_SCORES):
            groups.append(cur)
            cur, ntq, ntk, nown = [], q_lens[i], ctx_lens[i], q_lens[i] * ctx_lens[i]
        cur.append(i)
        tq, tk, own = ntq, ntk, nown
    if cur:
        groups.append(cur)
    return groups


def _gather_group(cache: torch.Tensor, tables: torch.Tensor, num_blocks: int, scale) -> torch.Tensor:
    # cache [NB, bs, Hkv, D], tables [G, >= num_blocks] (-1 = none) -> [G, Hkv, num_blocks * bs, D] fp32
    blocks = tables[:, :num_blocks].long().clamp(min=0)
    x = cache[blocks].flatten(1, 2).float()  # [G, L, Hkv, D]
    if cache.dtype == FP8:
        x = x * scale_value(scale, x.device)
    return x.transpose(1, 2)


def paged_attention_prefill_torch(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                                  k_scale=None, v_scale=None):
    """Same contract as paged_attention_prefill_ref, a few batched ops per group of sequences instead of a
    Python loop over them; fp32 scores and softmax."""
    out = torch.empty_like(q)
    cu, ctx = cu_seqlens_q.tolist(), context_lens.tolist()
    q_lens = [b - a for a, b in zip(cu, cu[1:])]
    bs, dev = k_cache.shape[1], q.device
    for group in _length_groups(q_lens, ctx):
        tq, tk = max(q_lens[i] for i in group), max(ctx[i] for i in group)
        nblk = -(-tk // bs)
        idx = torch.tensor(group, device=dev)
        k = _gather_group(k_cache, block_tables[idx], nblk, k_scale)
        v = _gather_group(v_cache, block_tables[idx], nblk, v_scale)
        # row j of member g is query cu[g] + j at position ctx[g] - q_len[g] + j; padded rows repeat the last one
        starts = torch.tensor([cu[i] for i in group], device=dev)
        lens = torch.tensor([q_lens[i] for i in group], device=dev)
        j = torch.arange(tq, device=dev)
        valid = j[None, :] < lens[:, None]  # [G, tq]
        rows = starts[:, None] + torch.minimum(j[None, :], lens[:, None] - 1)
        qg = q[rows].float().transpose(1, 2)  # [G, Hq, tq, D]
        gqa = qg.shape[1] != k.shape[1]
        if all(ctx[i] == q_lens[i] for i in group):
            # no cached prefix: plain causal attention (right padding only adds rows and keys after the real
            # ones), which SDPA computes without a mask and without the masked half
            o = F.scaled_dot_product_attention(qg, k[:, :, :tq], v[:, :, :tq], is_causal=True, scale=scale,
                                               enable_gqa=gqa)
        else:
            pos = torch.tensor([ctx[i] for i in group], device=dev)[:, None] - lens[:, None] + j[None, :]
            mask = torch.arange(nblk * bs, device=dev)[None, None, :] <= pos[:, :, None]  # [G, tq, L]
            o = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask[:, None], scale=scale, enable_gqa=gqa)
        out[rows[valid]] = o.transpose(1, 2)[valid].to(q.dtype)
    return out


def paged_attention_decode_torch(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale=None,
                                 v_scale=None):
    """Decode is prefill with one query per sequence at its last position."""
    cu = torch.arange(q.shape[0] + 1, device=q.device, dtype=torch.int32)
    return paged_attention_prefill_torch(q, k_cache, v_cache, cu, context_lens, block_tables, scale, k_scale,
                                         v_scale)


# ---- Triton ----
@triton.jit
def _load_kv(c_ptr, rows, d, mask, IS_FP8: tl.constexpr, dtype: tl.constexpr):
    # rows [BLOCK_N] int64 element offsets of tokens in one kv head -> [BLOCK_N, D] in `dtype`
    x = tl.load(c_ptr + rows[:, None] + d[None, :], mask=mask[:, None], other=0)
    if IS_FP8:  # the cache travels as uint8 bits; e4m3 values are exact in 16 bits, the scales are applied to
        # the scores (k_scale) and to the output (v_scale) instead of to every element
        x = x.to(tl.float8e4nv, bitcast=True).to(dtype)
    return x


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr):
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    return tl.dot(a, b)


@triton.jit
def _roped_heads(ptr, base, d, dsw, mask, w_ptr, eps, cos, sin, QK_NORM: tl.constexpr, D: tl.constexpr):
    # heads at element offsets `base` ([R, 1], or a scalar for one head) -> [R, D] fp32 after (per-head RMSNorm and)
    # neox RoPE, on whole heads: x * cos + (x with its halves swapped) * sin, sin negated on the first half, which is
    # kvant.kernels.rope_store's a cos - b sin, b cos + a sin
    x = tl.load(ptr + base + d[None, :], mask=mask, other=0.0)
    xs = tl.load(ptr + base + dsw[None, :], mask=mask, other=0.0)
    if QK_NORM:  # HF's order: fp32 normalise, round to the model dtype, times weight, round again
        h, hs = x.to(tl.float32), xs.to(tl.float32)
        inv = (1.0 / tl.sqrt(tl.sum(h * h, axis=1) / D + eps))[:, None]
        x = ((h * inv).to(x.dtype).to(tl.float32) * tl.load(w_ptr + d).to(tl.float32)[None, :]).to(x.dtype)
        xs = ((hs * inv).to(xs.dtype).to(tl.float32) * tl.load(w_ptr + dsw).to(tl.float32)[None, :]).to(xs.dtype)
    return x.to(tl.float32) * cos + xs.to(tl.float32) * sin


@triton.jit
def _decode_kernel(q_ptr, k_ptr, v_ptr, kc_ptr, vc_ptr, bt_ptr, lens_ptr, pos_ptr, slot_ptr, cs_ptr, qw_ptr, kw_ptr,
                   out_ptr, mid_o_ptr, mid_lse_ptr, cnt_ptr, qk_scale, k_scale, v_scale, eps, stride_qb, stride_qh,
                   stride_kb, stride_vb, stride_ob, stride_oh, stride_bt,
                   HKV: tl.constexpr, GROUP: tl.constexpr, BLOCK_H: tl.constexpr, D: tl.constexpr,
                   BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
                   ROPE: tl.constexpr, QK_NORM: tl.constexpr, IS_FP8: tl.constexpr, UPCAST: tl.constexpr,
                   EXACT_ROUND: tl.constexpr, MERGE3D: tl.constexpr, BLOCK_G: tl.constexpr,
                   PDL: tl.constexpr = False):
    pdl_enter(PDL)
    b, kvh, sp = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    length = tl.load(lens_ptr + b)
    # this sequence's own length is split evenly (in whole BLOCK_N tiles) over the launched splits: a short context
    # still spreads over several programs, and the split count stays a graph constant; splits past the end of the
    # sequence have nothing to do
    chunk = tl.cdiv(tl.cdiv(length, NUM_SPLITS), BLOCK_N) * BLOCK_N
    used = tl.cdiv(length, tl.maximum(chunk, 1))
    if sp >= used:
        return
    start = sp * chunk
    end = tl.minimum(start + chunk, length)
    hh = tl.arange(0, BLOCK_H)
    heads = kvh * GROUP + hh  # the query heads sharing this kv head ride one tile (GQA)
    hmask = hh < GROUP
    d = tl.arange(0, D)
    dtype = out_ptr.dtype.element_ty
    if ROPE:
        # q, k and v are this step's raw projections (views of the qkv output): every program rotates its own query
        # heads; the program whose split holds the new token (the last position) writes that token's k and v into
        # the cache, and its threads meet at a barrier before any of them reads the cache back
        dsw = (d + D // 2) % D
        pos = tl.load(pos_ptr + b).to(tl.int64)
        cos = tl.load(cs_ptr + pos * D + d % (D // 2))[None, :]
        sin = tl.load(cs_ptr + pos * D + D // 2 + d % (D // 2))
        sin = tl.where(d < D // 2, -sin, sin)[None, :]
        q = _roped_heads(q_ptr, b * stride_qb + heads[:, None] * D, d, dsw, hmask[:, None], qw_ptr, eps, cos, sin,
                         QK_NORM, D).to(dtype)
        slot = tl.load(slot_ptr + b)
        if (slot >= 0) & (sp == used - 1):
            k_new = _roped_heads(k_ptr, b * stride_kb + kvh * D, d, dsw, d[None, :] < D, kw_ptr, eps, cos, sin,
                                 QK_NORM, D)
            v_new = tl.load(v_ptr + b * stride_vb + kvh * D + d[None, :])
            dst = slot * (HKV * D) + kvh * D + d[None, :]
            tl.store(kc_ptr + dst, _to_cache(k_new.to(dtype), k_scale, IS_FP8, EXACT_ROUND))
            tl.store(vc_ptr + dst, _to_cache(v_new, v_scale, IS_FP8, EXACT_ROUND))
        tl.debug_barrier()
    else:
        q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=hmask[:, None], other=0.0)
    m_i = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_H,), tl.float32)
    acc = tl.zeros((BLOCK_H, D), tl.float32)
    for n0 in range(start, end, BLOCK_N):
        tok = n0 + tl.arange(0, BLOCK_N)
        tmask = tok < end
        blk = tl.load(bt_ptr + b * stride_bt + tok // BLOCK_SIZE, mask=tmask, other=0).to(tl.int64)
        rows = (blk * BLOCK_SIZE + tok % BLOCK_SIZE) * (HKV * D) + kvh * D
        k = _load_kv(kc_ptr, rows, d, tmask, IS_FP8, q.dtype)
        v = _load_kv(vc_ptr, rows, d, tmask, IS_FP8, q.dtype)
        s = _dot(q, tl.trans(k), UPCAST) * (qk_scale * k_scale)  # [BLOCK_H, BLOCK_N], log2 units
        s = tl.where(tmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, UPCAST)
        m_i = m_new
    out = out_ptr + b * stride_ob + heads[:, None] * stride_oh + d[None, :]
    o = acc * (v_scale / l_i)[:, None]
    if NUM_SPLITS == 1:  # a graph constant: no merge code at all
        tl.store(out, o.to(dtype), mask=hmask[:, None])
    elif used == 1:
        tl.store(out, o.to(dtype), mask=hmask[:, None])
    else:
        # each used split leaves its partial (output, log2-sum-exp) in mid; the last of this (sequence, kv head)'s
        # splits to arrive (an atomic counter, as in kvant.kernels.splitk) merges them: no second launch
        rows0 = (b * (HKV * GROUP) + heads) * NUM_SPLITS  # mid tensors are [B, Hq, NUM_SPLITS(, D)]
        tl.store(mid_o_ptr + (rows0 + sp)[:, None] * D + d[None, :], o, mask=hmask[:, None])
        tl.store(mid_lse_ptr + rows0 + sp, m_i + tl.log2(l_i), mask=hmask)
        tl.debug_barrier()  # every thread's partial is issued before the release below
        arrived = tl.atomic_add(cnt_ptr + b * HKV + kvh, 1, sem="acq_rel", scope="gpu")
        if arrived == used - 1:
            ss = tl.arange(0, BLOCK_S)
            if MERGE3D:  # every query head of the group at once: one [GROUP, splits, D] tile, one round trip
                g = tl.arange(0, BLOCK_G)
                m2 = (g[:, None] < GROUP) & (ss[None, :] < used)
                row = (b * (HKV * GROUP) + kvh * GROUP + g[:, None]) * NUM_SPLITS + ss[None, :]
                lse = tl.load(mid_lse_ptr + row, mask=m2, other=float("-inf"), cache_modifier=".cg")
                w = tl.exp2(lse - tl.where(g < GROUP, tl.max(lse, axis=1), 0.0)[:, None])
                parts = tl.load(mid_o_ptr + row[:, :, None] * D + d[None, None, :], mask=m2[:, :, None], other=0.0,
                                cache_modifier=".cg")
                merged = tl.sum(parts * w[:, :, None], axis=1) / tl.sum(w, axis=1)[:, None]
                tl.store(out_ptr + b * stride_ob + (kvh * GROUP + g)[:, None] * stride_oh + d[None, :],
                         merged.to(dtype), mask=(g < GROUP)[:, None])
            else:
                smask = ss < used
                for h in tl.static_range(GROUP):  # one query head at a time, all its splits in one tile
                    row = (b * (HKV * GROUP) + kvh * GROUP + h) * NUM_SPLITS + ss
                    lse = tl.load(mid_lse_ptr + row, mask=smask, other=float("-inf"), cache_modifier=".cg")
                    w = tl.exp2(lse - tl.max(lse, axis=0))
                    parts = tl.load(mid_o_ptr + row[:, None] * D + d[None, :], mask=smask[:, None], other=0.0,
                                    cache_modifier=".cg")
                    merged = tl.sum(parts * w[:, None], axis=0) / tl.sum(w, axis=0)
                    tl.store(out_ptr + b * stride_ob + (kvh * GROUP + h) * stride_oh + d, merged.to(dtype))
            tl.atomic_xchg(cnt_ptr + b * HKV + kvh, 0, sem="relaxed", scope="gpu")


def _check_cache(q, k_cache, v_cache):
    d, hkv = q.shape[-1], k_cache.shape[2]
    if k_cache.shape != v_cache.shape or k_cache.shape[3] != d or not k_cache.is_contiguous():
        raise ValueError(f"k_cache/v_cache must be contiguous [num_blocks, block_size, Hkv, {d}], "
                         f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    if q.shape[1] % hkv:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of kv heads ({hkv})")
    if d < 16 or d & (d - 1):
        raise ValueError(f"head_dim must be a power of two >= 16 for the Triton attention kernels, got {d}")
    if k_cache.dtype == FP8:
        return k_cache.view(torch.uint8), v_cache.view(torch.uint8)
    return k_cache, v_cache


def _decode(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale, v_scale, rope=None):
    # rope: None (q is rotated and the cache holds this step's k/v), or (k, v, positions, cos_sin, slot_mapping,
    # q_norm_weight, k_norm_weight, eps, strides) for the fused form
    b, hq, d = q.shape
    kc, vc = _check_cache(q, k_cache, v_cache)
    hkv, bs = k_cache.shape[2], k_cache.shape[1]
    out = torch.empty(b, hq, d, dtype=q.dtype, device=q.device)
    if b == 0:
        return out
    block_n = 64 if d <= 128 else 32
    # enough splits that B * Hkv * splits fills the GPU twice, no more than the longest possible context (the block
    # table's width, static under CUDA graphs: no device sync) has in 4-tile chunks; each program then takes its
    # share of its own sequence's length
    max_ctx = block_tables.shape[1] * bs
    splits = max(1, min(triton.cdiv(2 * num_sms(q.device), b * hkv), triton.cdiv(max_ctx, 4 * block_n), MAX_SPLITS))
    mid_o = torch.empty(b, hq, splits, d, dtype=torch.float32, device=q.device) if splits > 1 else out
    mid_lse = torch.empty(b, hq, splits, dtype=torch.float32, device=q.device) if splits > 1 else out
    counters = splitk_buffers(q.device, b * hkv, 1, 1)[1]  # zero between calls: the merging program resets its own
    if rope is None:
        k = v = positions = cos_sin = slots = qw = kw = q
        eps, (stride_qb, stride_qh), stride_kb, stride_vb = 0.0, q.stride()[:2], 0, 0
    else:
        k, v, positions, cos_sin, slots, qw, kw, eps, (stride_qb, stride_kb, stride_vb) = rope
        stride_qh = d
        qw, kw = (q, q) if qw is None else (qw, kw)
    _decode_kernel[(b, hkv, splits)](
        q, k, v, kc, vc, block_tables, context_lens, positions, slots, cos_sin, qw, kw, out, mid_o, mid_lse, counters,
        scale * LOG2E, scale_float(k_scale), scale_float(v_scale), float(eps), stride_qb, stride_qh, stride_kb,
        stride_vb, out.stride(0), out.stride(1), block_tables.stride(0), HKV=hkv, GROUP=hq // hkv,
        BLOCK_H=max(16, triton.next_power_of_2(hq // hkv)), D=d, BLOCK_SIZE=bs, BLOCK_N=block_n, NUM_SPLITS=splits,
        BLOCK_S=triton.next_power_of_2(splits), ROPE=rope is not None, QK_NORM=rope is not None and rope[5] is not None,
        IS_FP8=k_cache.dtype == FP8, UPCAST=interpreted(_decode_kernel) and q.dtype == torch.bfloat16,
        EXACT_ROUND=interpreted(_decode_kernel), MERGE3D=MERGE3D, BLOCK_G=triton.next_power_of_2(hq // hkv),
        num_warps=4, num_stages=2, **pdl_launch(q.device))
    return out


def paged_attention_decode_triton(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale=None,
                                  v_scale=None):
    q = q if q.stride(-1) == 1 else q.contiguous()
    return _decode(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale, v_scale)


def rope_store_decode_ref(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, block_tables, context_lens,
                          scale, k_scale=None, v_scale=None, q_norm_weight=None, k_norm_weight=None, eps=1e-6):
    """A decode step's attention from its raw projections: (q/k norm,) RoPE and the KV store
    (kvant.kernels.rope_store), then paged decode attention. q [B, Hq, D], k/v [B, Hkv, D] -> [B, Hq, D]."""
    q = rope_store_kv_ref(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, k_scale, v_scale,
                          q_norm_weight, k_norm_weight, eps)
    return paged_attention_decode_ref(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale, v_scale)


def rope_store_decode_triton(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, block_tables, context_lens,
                             scale, k_scale=None, v_scale=None, q_norm_weight=None, k_norm_weight=None, eps=1e-6):
    """rope_store_decode_ref in one launch: the decode attention kernel rotates q itself and the program that holds
    a sequence's new token stores its k and v; one query per sequence, at its last position."""
    strides = check_rope_store(q, k, v, cos_sin, k_cache, v_cache, q_norm_weight, k_norm_weight)
    if q.shape[0] != k.shape[0] or q.shape[0] != len(context_lens):
        raise ValueError(f"one query per sequence: got {q.shape[0]} queries, {k.shape[0]} keys and "
                         f"{len(context_lens)} context lengths")
    return _decode(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale, v_scale,
                   rope=(k, v, positions, cos_sin, slot_mapping, q_norm_weight, k_norm_weight, eps, strides))


def rope_store_decode(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, block_tables, context_lens, scale,
                      k_scale=None, v_scale=None, q_norm_weight=None, k_norm_weight=None, eps=1e-6):
    args = (q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, block_tables, context_lens, scale, k_scale,
            v_scale, q_norm_weight, k_norm_weight, eps)
    if on_cuda(q, k_cache, v_cache, block_tables, context_lens, slot_mapping):
        return rope_store_decode_triton(*args)
    return rope_store_decode_ref(*args)


@triton.jit
def _prefill_kernel(q_ptr, kc_ptr, vc_ptr, cu_ptr, lens_ptr, bt_ptr, out_ptr, qk_scale, k_scale, v_scale,
                    stride_qt, stride_qh, stride_ot, stride_oh, stride_bt, HKV: tl.constexpr, GROUP: tl.constexpr,
                    D: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    IS_FP8: tl.constexpr, UPCAST: tl.constexpr):
    mb, b, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(cu_ptr + b)
    q_len = tl.load(cu_ptr + b + 1) - q_start
    if mb * BLOCK_M >= q_len:
        return
    length = tl.load(lens_ptr + b)
    kvh = h // GROUP
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = offs_m < q_len
    pos = length - q_len + offs_m  # absolute positions of these queries (a cached prefix sits before them)
    d = tl.arange(0, D)
    q_rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(q_ptr + q_rows[:, None] * stride_qt + h * stride_qh + d[None, :], mask=mmask[:, None], other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D), tl.float32)
    end = tl.minimum(length, length - q_len + (mb + 1) * BLOCK_M)  # keys past the tile's last query are masked
    for n0 in range(0, end, BLOCK_N):
        tok = n0 + tl.arange(0, BLOCK_N)
        tmask = tok < end
        blk = tl.load(bt_ptr + b * stride_bt + tok // BLOCK_SIZE, mask=tmask, other=0).to(tl.int64)
        rows = (blk * BLOCK_SIZE + tok % BLOCK_SIZE) * (HKV * D) + kvh * D
        k = _load_kv(kc_ptr, rows, d, tmask, IS_FP8, q.dtype)
        v = _load_kv(vc_ptr, rows, d, tmask, IS_FP8, q.dtype)
        s = _dot(q, tl.trans(k), UPCAST) * (qk_scale * k_scale)
        s = tl.where((tok[None, :] <= pos[:, None]) & tmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows past q_len see no keys yet
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, UPCAST)
        m_i = m_new
    o = acc * (v_scale / tl.where(l_i == 0.0, 1.0, l_i))[:, None]
    tl.store(out_ptr + q_rows[:, None] * stride_ot + h * stride_oh + d[None, :], o.to(out_ptr.dtype.element_ty),
             mask=mmask[:, None])


def paged_attention_prefill_triton(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                                   k_scale=None, v_scale=None):
    t, hq, d = q.shape
    kc, vc = _check_cache(q, k_cache, v_cache)
    hkv, bs = k_cache.shape[2], k_cache.shape[1]
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty(t, hq, d, dtype=q.dtype, device=q.device)
    num_seqs = len(context_lens)
    if t == 0 or num_seqs == 0:
        return out
    max_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())  # one host sync per prefill step
    block_m = 64 if max_q <= 64 or d > 128 else 128
    upcast = interpreted(_prefill_kernel) and q.dtype == torch.bfloat16
    _prefill_kernel[(triton.cdiv(max_q, block_m), num_seqs, hq)](
        q, kc, vc, cu_seqlens_q, context_lens, block_tables, out, scale * LOG2E, scale_float(k_scale),
        scale_float(v_scale), q.stride(0), q.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
        HKV=hkv, GROUP=hq // hkv, D=d, BLOCK_SIZE=bs, BLOCK_M=block_m, BLOCK_N=64, IS_FP8=k_cache.dtype == FP8,
        UPCAST=upcast, num_warps=4 if block_m == 64 else 8, num_stages=2)
    return out


def paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale=None, v_scale=None):
    if on_cuda(q, k_cache, v_cache, block_tables, context_lens):
        return paged_attention_decode_triton(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale, v_scale)
    return paged_attention_decode_torch(q, k_cache, v_cache, block_tables, context_lens, scale, k_scale, v_scale)


def paged_attention_prefill(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                            k_scale=None, v_scale=None):
    if on_cuda(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables):
        return paged_attention_prefill_triton(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                                              k_scale, v_scale)
    return paged_attention_prefill_torch(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                                       k_scale, v_scale)
