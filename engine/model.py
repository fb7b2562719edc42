"""kvant's Llama-family decoder (Llama 2/3, Mistral, Qwen2, Qwen3) on flattened tokens.

Module and parameter names follow transformers, so checkpoints (and compressed-tensors artifacts) load by name.
Every tensor here is flat over the step's tokens: T = all tokens of all sequences.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kvant.engine.config import ModelConfig, rope_inv_freq
from kvant.engine.context import get_context
from kvant.kernels.activation import silu_and_mul
from kvant.kernels.cpu_attention import attention_cpu, rope_cpu
from kvant.kernels.kv_store import store_kvcache
from kvant.kernels.paged_attention import paged_attention_decode, paged_attention_prefill, rope_store_decode
from kvant.kernels.quant_rows import rms_norm_quant, silu_and_mul_quant
from kvant.kernels.rmsnorm import rms_norm
from kvant.kernels.rope import apply_rope
from kvant.kernels.rope_store import rope_store_kv, supported as rope_store_supported


class QuantAct(NamedTuple):
    """A W8A8 layer's input, quantised per token by the kernel that produced it (RMSNorm or SiLU·mul, fused:
    kvant.kernels.quant_rows) instead of by the layer: q [T, K] FP8/int8, scale fp32 [T, 1], and the 16-bit dtype it
    stands for (the layer's output dtype)."""
    q: torch.Tensor
    scale: torch.Tensor
    dtype: torch.dtype

    @property
    def shape(self) -> torch.Size:
        return self.q.shape


def act_quant(linear: nn.Module, x: torch.Tensor) -> torch.dtype | None:
    """The dtype a W8A8 layer (kvant.engine.quant_linear) wants its input quantised to at x's row count (it runs
    weight-only at decode sizes), None where it takes 16-bit activations; CUDA only (the CPU path is unchanged)."""
    wants = getattr(linear, "act_quant", None)
    return wants(x.numel() // x.shape[-1]) if wants is not None and x.is_cuda else None


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x, residual=None, quant: torch.dtype | None = None):
        # quant: the output quantised per token in the same kernel, as a QuantAct for the W8A8 layer it feeds
        if quant is None:
            return rms_norm(x, self.weight, self.eps, residual)
        q, scale, *summed = rms_norm_quant(x, self.weight, self.eps, residual, quant)
        act = QuantAct(q, scale, x.dtype)
        return act if residual is None else (act, summed[0])


class RotaryEmbedding(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.register_buffer("cos_sin", self._table(), persistent=False)  # [max_pos, D] fp32

    def _table(self) -> torch.Tensor:
        inv_freq = rope_inv_freq(self.config)  # [D/2]
        t = torch.arange(self.config.max_position_embeddings, dtype=torch.float32)
        freqs = t[:, None] * inv_freq[None, :]  # [max_pos, D/2]
        return torch.cat([freqs.cos(), freqs.sin()], dim=-1)

    def reset(self) -> None:
        # buffers built on the meta device are recomputed once the model has real storage
        self.cos_sin = self._table().to(self.cos_sin.device)

    def forward(self, positions, q, k):
        return apply_rope(q, k, positions, self.cos_sin)


# checkpoint projection -> (merged module, part index): the loader stacks q/k/v and gate/up into one GEMM each
# (vLLM's stacked params); artifacts on disk keep the separate names
STACKED_PROJECTIONS = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
                       "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}


def stacked_output_sizes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Output rows of each part of a merged projection, in part order."""
    q, kv, i = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim, \
        config.intermediate_size
    return {"qkv_proj": (q, kv, kv), "gate_up_proj": (i, i)}


def stacked_parts(config: ModelConfig, merged_name: str) -> list[tuple[str, int, int]]:
    """[(checkpoint module name, first row, rows)] of a merged module's parts, e.g. "...self_attn.qkv_proj"."""
    parent, _, leaf = merged_name.rpartition(".")
    sizes = stacked_output_sizes(config)[leaf]
    names = [n for n, (m, _) in STACKED_PROJECTIONS.items() if m == leaf]
    offsets = [sum(sizes[:j]) for j in range(len(sizes))]
    return [(f"{parent}.{n}" if parent else n, o, s) for n, o, s in zip(names, offsets, sizes)]


class Attention(nn.Module):
    """Attention core. Reads the step's Context; without one it is plain causal attention (the reference)."""

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = head_dim**-0.5
        self.k_cache = self.v_cache = torch.tensor([])  # [num_blocks, block_size, Hkv, D], set by ModelRunner
        self.k_scale: float | None = None  # fp8 KV-cache scales
        self.v_scale: float | None = None

    def forward(self, q, k, v):  # q [T, Hq, D], k/v [T, Hkv, D]
        ctx = get_context()
        if ctx is None:
            qh, kh, vh = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # [1, H, T, D]
            o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=self.scale,
                                               enable_gqa=self.num_heads != self.num_kv_heads)
            return o.squeeze(0).transpose(0, 1)
        store_kvcache(k, v, self.k_cache, self.v_cache, ctx.slot_mapping, self.k_scale, self.v_scale)
        return self.attend(q, ctx)

    def forward_cpu(self, q, k, v, ctx):  # q, k after RoPE; ctx.cpu holds the step's cache rows and masks
        return attention_cpu(q, k, v, self.k_cache, self.v_cache, ctx.cpu, self.scale, lambda: paged_attention_prefill(
            q, self.k_cache, self.v_cache, ctx.cu_seqlens_q, ctx.context_lens, ctx.block_tables, self.scale))

    def attend(self, q, ctx):  # the cache already holds this step's k/v
        if ctx.is_decode:
            return paged_attention_decode(q, self.k_cache, self.v_cache, ctx.block_tables, ctx.context_lens,
                                          self.scale, self.k_scale, self.v_scale)
        return paged_attention_prefill(q, self.k_cache, self.v_cache, ctx.cu_seqlens_q, ctx.context_lens,
                                       ctx.block_tables, self.scale, self.k_scale, self.v_scale)


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding):
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        bias = config.attention_bias
        self.q_size, self.kv_size = self.num_heads * d, self.num_kv_heads * d
        self.qkv_proj = nn.Linear(h, self.q_size + 2 * self.kv_size, bias=bias)  # q_proj, k_proj, v_proj rows
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(d, config.rms_norm_eps)
            self.k_norm = RMSNorm(d, config.rms_norm_eps)
        self.rotary = rotary  # shared by all layers, not a parameter
        self.attn = Attention(self.num_heads, self.num_kv_heads, d)

    def forward(self, positions, x):  # x [T, H]
        t = x.shape[0]
        qkv = self.qkv_proj(x)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)  # views, no copy
        q = q.view(t, self.num_heads, self.head_dim)
        k = k.view(t, self.num_kv_heads, self.head_dim)
        v = v.view(t, self.num_kv_heads, self.head_dim)
        ctx = get_context()
        if ctx is not None and ctx.cpu is not None:
            o = self._attend_cpu(qkv, q, k, v, ctx)
        elif ctx is not None and q.is_cuda and rope_store_supported(self.head_dim):
            # (q/k norm,) RoPE and k/v into the paged cache in one kernel, q, k and v staying views of the qkv output
            a = self.attn
            norm = dict(q_norm_weight=self.q_norm.weight, k_norm_weight=self.k_norm.weight,
                        eps=self.q_norm.eps) if hasattr(self, "q_norm") else {}
            cos_sin = self.rotary[0].cos_sin
            if ctx.is_decode:  # that kernel is the decode attention itself
                o = rope_store_decode(q, k, v, positions, cos_sin, a.k_cache, a.v_cache, ctx.slot_mapping,
                                      ctx.block_tables, ctx.context_lens, a.scale, a.k_scale, a.v_scale, **norm)
            else:
                q = rope_store_kv(q, k, v, positions, cos_sin, a.k_cache, a.v_cache, ctx.slot_mapping, a.k_scale,
                                  a.v_scale, **norm)
                o = a.attend(q, ctx)  # [T, Hq, D]
        else:
            if hasattr(self, "q_norm"):
                q, k = self.q_norm(q), self.k_norm(k)
            q, k = self.rotary[0](positions, q, k)
            o = self.attn(q, k, v)  # [T, Hq, D]
        return self.o_proj(o.reshape(t, self.num_heads * self.head_dim))

    def _attend_cpu(self, qkv, q, k, v, ctx):  # qkv [T, q_size + 2 kv_size]; q/k/v its [T, heads, D] views
        step = ctx.cpu
        if hasattr(self, "q_norm"):
            q, k = rope_cpu(self.q_norm(q), step), rope_cpu(self.k_norm(k), step)
        else:
            # q and k are adjacent columns of the qkv output: one RoPE over [T, Hq + Hkv, D]
            qk = qkv[:, :self.q_size + self.kv_size].view(qkv.shape[0], self.num_heads + self.num_kv_heads, -1)
            qk = rope_cpu(qk, step)
            q, k = qk[:, :self.num_heads], qk[:, self.num_heads:]
        return self.attn.forward_cpu(q, k, v, ctx)  # [T, Hq, D]


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.gate_up_proj = nn.Linear(h, 2 * i, bias=False)  # gate_proj rows, then up_proj rows
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        gate_up = self.gate_up_proj(x)
        if hasattr(type(self.down_proj), "forward_silu_mul"):  # SkinnyLinear, W4A16Linear: SiLU·mul inside the GEMM
            return self.down_proj.forward_silu_mul(gate_up)
        if (quant := act_quant(self.down_proj, gate_up)) is not None:  # W8A8: SiLU·mul writes it quantised
            return self.down_proj(QuantAct(*silu_and_mul_quant(gate_up, quant), gate_up.dtype))
        return self.down_proj(silu_and_mul(gate_up))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = SelfAttention(config, rotary)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, positions, x, residual):
        # a W8A8 qkv / gate_up projection gets its input quantised by the norm's own kernel (act_quant)
        quant = act_quant(self.self_attn.qkv_proj, x)
        if residual is None:
            x, residual = self.input_layernorm(x, quant=quant), x
        else:
            x, residual = self.input_layernorm(x, residual, quant=quant)
        x = self.self_attn(positions, x)
        x, residual = self.post_attention_layernorm(x, residual, quant=act_quant(self.mlp.gate_up_proj, x))
        return self.mlp(x), residual


class DecoderModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary_emb = RotaryEmbedding(config)
        # a tuple hides the shared rotary table from each layer's state_dict
        self.layers = nn.ModuleList(DecoderLayer(config, (self.rotary_emb,)) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids, positions):
        x, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            x, residual = layer(positions, x, residual)
        x, _ = self.norm(x, residual)
        return x


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = DecoderModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids, positions):  # [T] int64, [T] int64 -> hidden [T, H]
        return self.model(input_ids, positions)

    def compute_logits(self, hidden):  # [N, H] -> [N, V] float32
        return self.lm_head(hidden).float()

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn.attn for layer in self.model.layers]
