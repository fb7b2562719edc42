"""GPU memory budget: weights, activation peak, CUDA graphs and what is left for the KV cache.

Planned before anything large is allocated, so a model that cannot hold one full-length sequence is refused with
the numbers, rather than failing later with an out-of-memory error.
"""
from dataclasses import dataclass

from kvant.engine.config import ModelConfig
from kvant.artifact.errors import KvantError

GiB = 1 << 30
# CUDA graphs share one memory pool; each captured batch size adds little beyond the largest one's buffers.
GRAPH_BYTES_PER_BATCH_SIZE = 2 << 20


@dataclass(slots=True, frozen=True)
class MemoryPlan:
    total_bytes: int  # the card's memory
    budget_bytes: int  # what kvant may use in all (utilization x total, minus other processes' use)
    weights_bytes: int
    activation_bytes: int
    cuda_graph_bytes: int
    kv_cache_bytes: int
    kv_bytes_per_token: int
    block_size: int
    num_blocks: int
    device: str = "cuda"
    sized_by: str = "budget"  # "budget": what the card's share leaves; else what fixed the pool ("num_kv_blocks", ...)

    @property
    def kv_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def breakdown(self) -> str:
        def g(x: int) -> str:
            return f"{x / GiB:.2f} GiB"

        limit = (f"budget {g(self.budget_bytes)} of {g(self.total_bytes)}" if self.sized_by == "budget" else
                 f"KV pool set by {self.sized_by}, {g(self.budget_bytes)} of {g(self.total_bytes)} in use")
        return (f"memory on {self.device}: weights {g(self.weights_bytes)}, activations peak "
                f"{g(self.activation_bytes)}, CUDA graphs {g(self.cuda_graph_bytes)}, KV cache "
                f"{g(self.kv_cache_bytes)} = {self.kv_tokens:,} tokens ({self.num_blocks} blocks of "
                f"{self.block_size}); {limit}")


def kv_bytes_per_token(cfg: ModelConfig, kv_dtype_bytes: int) -> int:
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * kv_dtype_bytes


def activation_peak_bytes(cfg: ModelConfig, max_num_batched_tokens: int, max_num_seqs: int, act_bytes: int) -> int:
    """Largest live tensors of one step: the MLP's gate|up output plus a few hidden-size buffers, and fp32 logits
    for every sampled row (prompt logprobs may ask for all of a step's tokens)."""
    t = max_num_batched_tokens
    mlp = t * 3 * cfg.intermediate_size * act_bytes  # gate|up [T, 2I] and the activated [T, I]
    hidden = 4 * t * max(cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim) * act_bytes
    logits = 2 * max(max_num_seqs, t) * cfg.vocab_size * 4  # logits and their log-softmax, fp32
    return mlp + hidden + logits


def plan_memory(cfg: ModelConfig, *, total_bytes: int, used_by_others: int, weights_bytes: int,
                gpu_memory_utilization: float, kv_cache_memory: int | None, max_model_len: int,
                max_num_batched_tokens: int, max_num_seqs: int, block_size: int, kv_dtype_bytes: int,
                act_bytes: int, graph_batch_sizes: int) -> MemoryPlan:
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    per_token = kv_bytes_per_token(cfg, kv_dtype_bytes)
    block_bytes = per_token * block_size
    activations = activation_peak_bytes(cfg, max_num_batched_tokens, max_num_seqs, act_bytes)
    graphs = GRAPH_BYTES_PER_BATCH_SIZE * graph_batch_sizes
    budget = int(total_bytes * gpu_memory_utilization) - used_by_others
    fixed = weights_bytes + activations + graphs
    if kv_cache_memory is not None:
        kv = kv_cache_memory
        if fixed + kv > total_bytes - used_by_others:
            raise KvantError(
                f"kv_cache_memory {kv / GiB:.2f} GiB does not fit: weights {weights_bytes / GiB:.2f} GiB + "
                f"activations {activations / GiB:.2f} GiB + graphs {graphs / GiB:.2f} GiB leave "
                f"{max(0, total_bytes - used_by_others - fixed) / GiB:.2f} GiB free on this card")
    else:
        kv = budget - fixed
    num_blocks = max(0, kv // block_bytes)
    need_blocks = -(-max_model_len // block_size)
    if num_blocks < need_blocks:
        need = need_blocks * block_bytes
        raise KvantError(
            f"the model cannot fit one {max_model_len}-token sequence: its KV cache needs {need / GiB:.2f} GiB but "
            f"only {max(kv, 0) / GiB:.2f} GiB is left after weights {weights_bytes / GiB:.2f} GiB, activations "
            f"{activations / GiB:.2f} GiB and CUDA graphs {graphs / GiB:.2f} GiB (budget {budget / GiB:.2f} GiB); "
            "lower --max-model-len, use --kv-cache-dtype fp8, or raise --gpu-memory-utilization")
    return MemoryPlan(total_bytes, budget, weights_bytes, activations, graphs, num_blocks * block_bytes, per_token,
                      block_size, int(num_blocks))


def plan_fixed(cfg: ModelConfig, *, device: str, total_bytes: int, weights_bytes: int, num_blocks: int,
               block_size: int, kv_dtype_bytes: int, act_bytes: int, max_num_batched_tokens: int, max_num_seqs: int,
               graph_batch_sizes: int, sized_by: str) -> MemoryPlan:
    """The plan of a pool whose size was given rather than derived from a card's budget (`num_kv_blocks`, or the
    CPU's default): it reports what is allocated, and its budget is that sum."""
    per_token = kv_bytes_per_token(cfg, kv_dtype_bytes)
    activations = activation_peak_bytes(cfg, max_num_batched_tokens, max_num_seqs, act_bytes)
    graphs = GRAPH_BYTES_PER_BATCH_SIZE * graph_batch_sizes
    kv = num_blocks * per_token * block_size
    return MemoryPlan(total_bytes, weights_bytes + activations + graphs + kv, weights_bytes, activations, graphs, kv,
                      per_token, block_size, num_blocks, device, sized_by)
