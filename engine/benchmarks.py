"""Seeded benchmark workloads, the card's measured ceilings, and the roofline of a workload.

W1 is nano-vllm's bench.py exactly; W2/W3/W5 are fixed-length workloads (see bench/RESULTS.md).
"""
import random
import statistics
import time
from dataclasses import dataclass

from kvant.engine.config import ModelConfig

WORKLOADS = ("W1", "W2", "W3", "W4", "W5")


@dataclass(slots=True, frozen=True)
class Request:
    prompt_token_ids: list[int]
    max_tokens: int


def workload(name: str, limit: int | None = None) -> list[Request]:
    random.seed(0)  # nano-vllm: seed 0, 256 sequences, lengths U[100, 1024], ids U[0, 10000]
    if name == "W1":
        prompts = [[random.randint(0, 10000) for _ in range(random.randint(100, 1024))] for _ in range(256)]
        outs = [random.randint(100, 1024) for _ in range(256)]  # sums to 133,966
        reqs = [Request(p, o) for p, o in zip(prompts, outs)]
    else:
        shapes = {"W2": (1000, 1000, 128), "W3": (2048, 128, 512), "W4": (128, 128, 1024), "W5": (128, 512, 1)}
        if name not in shapes:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, got {name!r}")
        isl, osl, n = shapes[name]
        reqs = [Request([random.randint(0, 10000) for _ in range(isl)], osl) for _ in range(n)]
    return reqs[:limit] if limit else reqs


@dataclass(slots=True, frozen=True)
class Ceilings:
    device: str
    copy_bytes_per_s: float  # device-to-device copy, read + write bytes
    bf16_flops: float
    fp8_flops: float | None
    int8_ops: float | None


def measure_ceilings() -> Ceilings:
    """Measured on the card in this process: large copy bandwidth and large matmul rates."""
    import torch
    from triton.testing import do_bench

    dev = torch.device("cuda")
    src = torch.randn(1 << 28, device=dev, dtype=torch.float32)  # 1 GiB
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    bw = 2 * src.numel() * 4 / (ms * 1e-3)
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    ms = do_bench(lambda: a @ b, warmup=50, rep=300, return_mode="median")
    bf16 = 2 * n**3 / (ms * 1e-3)
    fp8 = int8 = None
    if torch.cuda.get_device_capability() >= (8, 9):
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
        one = torch.ones((), device=dev)
        ms = do_bench(lambda: torch._scaled_mm(a8, b8, one, one, out_dtype=torch.bfloat16), warmup=50, rep=300,
                      return_mode="median")
        fp8 = 2 * n**3 / (ms * 1e-3)
    ai = torch.randint(-100, 100, (n, n), device=dev, dtype=torch.int8)
    bi = torch.randint(-100, 100, (n, n), device=dev, dtype=torch.int8).t().contiguous().t()
    ms = do_bench(lambda: torch._int_mm(ai, bi), warmup=50, rep=300, return_mode="median")
    int8 = 2 * n**3 / (ms * 1e-3)
    return Ceilings(torch.cuda.get_device_name(), bw, bf16, fp8, int8)


# bytes per weight element, by weight format (int4: 4 bits + one bf16 scale per group of 128)
WEIGHT_BYTES = {"bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5 + 2 / 128}


def model_bytes(cfg: ModelConfig, quant: str) -> float:
    """Weight bytes read per decode step: linear layers in `quant`, LM head in bf16 (embedding rows are negligible)."""
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
    linear = cfg.num_hidden_layers * (h * (q + 2 * kv) + q * h + 3 * h * i)
    return linear * WEIGHT_BYTES[quant] + cfg.vocab_size * h * 2.0


def linear_params(cfg: ModelConfig) -> float:
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
    return cfg.num_hidden_layers * (h * (q + 2 * kv) + q * h + 3 * h * i) + cfg.vocab_size * h


def kv_bytes_per_token(cfg: ModelConfig, kv_dtype: str) -> float:
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * (1 if kv_dtype == "fp8" else 2)


def roofline_seconds(reqs: list[Request], cfg: ModelConfig, quant: str, kv_dtype: str, ceil: Ceilings,
                     max_num_seqs: int = 256) -> float:
    """Ideal time of the workload on this card: every prompt prefilled at compute peak, then decode steps that each
    read the weights once plus every running sequence's KV, at max(bytes / bandwidth, flops / peak)."""
    peak = {"fp8": ceil.fp8_flops, "int8": ceil.int8_ops}.get(quant) or ceil.bf16_flops
    n_lin = linear_params(cfg)
    attn = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim  # flops per (query, key) pair
    total = 0.0
    for start in range(0, len(reqs), max_num_seqs):  # waves of at most max_num_seqs concurrent sequences
        wave = reqs[start:start + max_num_seqs]
        total += sum(2 * n_lin * len(r.prompt_token_ids) + attn * len(r.prompt_token_ids) ** 2 / 2 for r in wave) / peak
        w_bytes, kv_tok = model_bytes(cfg, quant), kv_bytes_per_token(cfg, kv_dtype)
        for step in range(max(r.max_tokens for r in wave) - 1):  # the first token comes from the prefill
            active = [len(r.prompt_token_ids) + step for r in wave if r.max_tokens - 1 > step]
            bytes_ = w_bytes + kv_tok * sum(active)
            flops = 2 * n_lin * len(active) + attn * sum(active)
            total += max(bytes_ / ceil.copy_bytes_per_s, flops / peak)
    return total


def percentile(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def summarize(latencies: dict[str, list[float]]) -> dict[str, float | None]:
    out = {}
    for name, xs in latencies.items():
        out[f"mean_{name}_ms"] = statistics.mean(xs) * 1e3 if xs else None
        for p in (0.5, 0.9, 0.99):
            v = percentile(xs, p)
            out[f"p{int(p * 100)}_{name}_ms"] = v * 1e3 if v is not None else None
    return out


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
