"""FP8 KV-cache scales: max |k| and |v| per attention layer, observed after RoPE (what the cache stores), through a
transformers attention function that records them and then runs SDPA."""
from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from kvant.kernels.formats import FP8_MAX
from kvant.quantize.observers import AbsMax

IMPLEMENTATION = "kvant_kv_observe"


class KVObserver:
    def __init__(self):
        self.k: dict[int, AbsMax] = {}
        self.v: dict[int, AbsMax] = {}

    def attention(self, module, query, key, value, attention_mask, **kwargs):
        # key/value [B, Hkv, T, D] after RoPE, before GQA expansion
        self.k.setdefault(module.layer_idx, AbsMax()).update(key)
        self.v.setdefault(module.layer_idx, AbsMax()).update(value)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    def scales(self, layer_idx: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        # compressed-tensors names under model.layers.N.self_attn; shape [1], in the model dtype
        return {name: torch.tensor([max(obs[layer_idx].value, 1e-6) / FP8_MAX], dtype=dtype)
                for name, obs in (("k_scale", self.k), ("v_scale", self.v))}


@contextmanager
def observing(config, observer: KVObserver):
    # every attention module reads config._attn_implementation at call time
    AttentionInterface.register(IMPLEMENTATION, observer.attention)
    previous = config._attn_implementation
    config._attn_implementation = IMPLEMENTATION
    try:
        yield observer
    finally:
        config._attn_implementation = previous
