"""Per-step attention metadata. Only ModelRunner sets it; attention layers only read it.

It is module-global (nano-vllm's `Context`) so that CUDA-graph replays see the same static tensors.
"""
from dataclasses import dataclass

import torch

from kvant.kernels.cpu_attention import CpuStep


@dataclass(slots=True)
class Context:
    cu_seqlens_q: torch.Tensor  # [B+1] int32: query tokens of each sequence in the flattened step
    context_lens: torch.Tensor  # [B] int32: kv length of each sequence including this step's tokens
    slot_mapping: torch.Tensor  # [T] int64: cache slot per new token (block_id * block_size + offset), -1 = pad
    block_tables: torch.Tensor  # [B, max_blocks] int32, -1 padded
    is_decode: bool  # every sequence has exactly one query token
    max_seqlen_q: int
    cpu: CpuStep | None = None  # the CPU path's per-step rope rows, cache rows and masks (16-bit KV caches)


_CONTEXT: Context | None = None


def set_context(ctx: Context | None) -> None:
    global _CONTEXT
    _CONTEXT = ctx


def get_context() -> Context | None:
    return _CONTEXT
