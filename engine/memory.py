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
# Logits exist only for the rows that need them: one per sampled sequence (a prefill chunk's last token, each decode
# token) and prompt-logprob rows, PROMPT_LOGPROB_ROWS at a time. Bytes per logit while they are live:
PROMPT_LOGPROB_ROWS = 256
SAMPLE_BYTES_PER_LOGIT = 40  # bf16 lm_head output, fp32 copy, and the sampler's sort/softmax/cumsum working set
PROMPT_LOGPROB_BYTES_PER_LOGIT = 12  # bf16 lm_head output, fp32 logits and their log-softmax


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
    """Largest live tensors of one step, bounded by the step's token budget T (the chunked-prefill size): during the
    forward, the MLP's gate|up output and activation plus a few [T, hidden] buffers; after it, the final hidden
    states plus logits for the sampled rows (at most one per sequence) and one chunk of prompt-logprob rows."""
    t = max_num_batched_tokens
    mlp = t * 3 * cfg.intermediate_size * act_bytes  # gate|up [T, 2I] and the activated [T, I]
    width = max(cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim)
    forward = mlp + 4 * t * width * act_bytes
    sampled = min(t, max_num_seqs) * cfg.vocab_size * SAMPLE_BYTES_PER_LOGIT
    prompt = min(t, PROMPT_LOGPROB_ROWS) * cfg.vocab_size * PROMPT_LOGPROB_BYTES_PER_LOGIT
    return max(forward, t * cfg.hidden_size * act_bytes + sampled + prompt)


def weight_bits(cfg: ModelConfig) -> int:
    # the smallest weight width the checkpoint's quantization_config names (16 when unquantized)
    groups = (cfg.quantization_config or {}).get("config_groups") or {}
    bits = [g["weights"]["num_bits"] for g in groups.values() if (g.get("weights") or {}).get("num_bits")]
    return min(bits, default=16)


def fit_advice(cfg: ModelConfig, weights_fit: bool) -> str:
    # what to change when the fixed part of the plan (weights, activations, graphs) exceeds the budget
    if weights_fit:
        return "lower --max-num-batched-tokens (the activation peak grows with it) or --max-num-seqs"
    bits = weight_bits(cfg)
    if bits > 4:
        return "try W4A16 (kvant quantize MODEL --recipe w4a16-gptq)" + (" or FP8" if bits > 8 else "")
    return "use a larger --gpu-memory or card, or a smaller model"


def capped_total(total_bytes: int, gpu_memory: int | None) -> int:
    # --gpu-memory: plan as if the card had this much memory (never more than it has)
    return total_bytes if gpu_memory is None else min(total_bytes, gpu_memory)


def check_fits(cfg: ModelConfig, *, total_bytes: int, used_by_others: int, weights_bytes: int,
               gpu_memory_utilization: float, activation_bytes: int, graph_bytes: int, capped: bool) -> None:
    """Refuses, in one line with the numbers and what to change, a model whose weights, activation peak and CUDA
    graphs exceed the budget. Runs before any weight is allocated (weights sized on the meta device)."""
    budget = int(total_bytes * gpu_memory_utilization) - used_by_others
    if weights_bytes + activation_bytes + graph_bytes <= budget:
        return
    cap = f"{total_bytes / GiB:.1f} GiB ({'--gpu-memory' if capped else 'the card'})"
    others = f", {used_by_others / GiB:.1f} GiB in use outside kvant's tensors (CUDA context, other processes)" if used_by_others > 256 << 20 else ""
    raise KvantError(
        f"needs {weights_bytes / GiB:.1f} GiB for weights + {activation_bytes / GiB:.1f} GiB activations + "
        f"{graph_bytes / GiB:.2f} GiB CUDA graphs; cap is {budget / GiB:.1f} GiB "
        f"({gpu_memory_utilization:g} of {cap}{others}); {fit_advice(cfg, weights_bytes < budget)}")


def plan_memory(cfg: ModelConfig, *, total_bytes: int, used_by_others: int, weights_bytes: int,
                gpu_memory_utilization: float, kv_cache_memory: int | None, max_model_len: int,
                max_num_batched_tokens: int, max_num_seqs: int, block_size: int, kv_dtype_bytes: int,
                act_bytes: int, graph_batch_sizes: int, capped: bool = False) -> MemoryPlan:
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    per_token = kv_bytes_per_token(cfg, kv_dtype_bytes)
    block_bytes = per_token * block_size
    activations = activation_peak_bytes(cfg, max_num_batched_tokens, max_num_seqs, act_bytes)
    graphs = GRAPH_BYTES_PER_BATCH_SIZE * graph_batch_sizes
    if graph_batch_sizes:  # the decode graphs sample in-graph: the largest one's LM-head logits live in their pool
        graphs += max_num_seqs * cfg.vocab_size * act_bytes
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
        check_fits(cfg, total_bytes=total_bytes, used_by_others=used_by_others, weights_bytes=weights_bytes,
                   gpu_memory_utilization=gpu_memory_utilization, activation_bytes=activations, graph_bytes=graphs,
                   capped=capped)
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
