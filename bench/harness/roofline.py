"""The card's measured ceilings and the roofline of a workload: the floor `kvant bench` reports against."""
from dataclasses import dataclass

from kvant.bench.workloads import Request
from kvant.engine.config import ModelConfig
from kvant.engine.memory import kv_bytes_per_token


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
KV_BYTES = {"bf16": 2, "fp8": 1}  # bytes per KV element, by the bench's KV tag


def decoder_linear_params(cfg: ModelConfig) -> int:
    """Weights of the decoder layers' Linears (qkv, o, gate|up, down), the ones a scheme quantizes."""
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
    return cfg.num_hidden_layers * (h * (q + 2 * kv) + q * h + 3 * h * i)


def model_bytes(cfg: ModelConfig, quant: str) -> float:
    """Weight bytes read per decode step: linear layers in `quant`, LM head in bf16 (embedding rows are negligible)."""
    return decoder_linear_params(cfg) * WEIGHT_BYTES[quant] + cfg.vocab_size * cfg.hidden_size * 2.0


def linear_params(cfg: ModelConfig) -> int:
    """Every matmul weight of a token's forward: the decoder Linears and the LM head."""
    return decoder_linear_params(cfg) + cfg.vocab_size * cfg.hidden_size


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
        w_bytes, kv_tok = model_bytes(cfg, quant), kv_bytes_per_token(cfg, KV_BYTES[kv_dtype])
        for step in range(max(r.max_tokens for r in wave) - 1):  # the first token comes from the prefill
            active = [len(r.prompt_token_ids) + step for r in wave if r.max_tokens - 1 > step]
            bytes_ = w_bytes + kv_tok * sum(active)
            flops = 2 * n_lin * len(active) + attn * sum(active)
            total += max(bytes_ / ceil.copy_bytes_per_s, flops / peak)
    return total
