from pathlib import Path

import pytest

from kvant.artifact.errors import KvantError
from kvant.engine.config import load_config_file, parse_size
from kvant.engine.memory import GiB, kv_bytes_per_token, plan_memory

REPO = Path(__file__).resolve().parents[2]

LLAMA8B = load_config_file(REPO / "bench" / "configs" / "llama-3.1-8b.json")


def _plan(**over):
    args = dict(total_bytes=24 * GiB, used_by_others=2 * GiB, weights_bytes=int(5.5 * GiB),
                gpu_memory_utilization=0.9, kv_cache_memory=None, max_model_len=8192, max_num_batched_tokens=2048,
                max_num_seqs=64, block_size=16, kv_dtype_bytes=2, act_bytes=2, graph_batch_sizes=8)
    args.update(over)
    return plan_memory(LLAMA8B, **args)


def test_kv_bytes_per_token_by_hand():
    # 2 (k and v) x 32 layers x 8 kv heads x 128 dims x 2 bytes = 131,072
    assert kv_bytes_per_token(LLAMA8B, 2) == 131072
    assert kv_bytes_per_token(LLAMA8B, 1) == 65536


def test_utilization_budget_arithmetic():
    p = _plan()
    budget = int(24 * GiB * 0.9) - 2 * GiB
    assert p.budget_bytes == budget
    left = budget - p.weights_bytes - p.activation_bytes - p.cuda_graph_bytes
    assert p.num_blocks == left // (131072 * 16)
    assert p.kv_cache_bytes == p.num_blocks * 131072 * 16 and p.kv_tokens == p.num_blocks * 16
    assert "KV cache" in p.breakdown() and f"{p.kv_tokens:,} tokens" in p.breakdown()


def test_absolute_kv_cache_memory_is_honoured_within_a_block():
    p = _plan(kv_cache_memory=parse_size("4GiB"))
    assert 4 * GiB - 131072 * 16 < p.kv_cache_bytes <= 4 * GiB
    fp8 = _plan(kv_cache_memory=parse_size("4GiB"), kv_dtype_bytes=1)
    assert fp8.kv_tokens == 2 * p.kv_tokens


def test_refuses_when_one_full_sequence_does_not_fit():
    with pytest.raises(KvantError, match="cannot fit one 131072-token sequence") as err:
        _plan(max_model_len=131072)  # 16 GiB of bf16 KV for one sequence
    assert "--max-model-len" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(KvantError, match="does not fit"):
        _plan(kv_cache_memory=parse_size("20GiB"))


@pytest.mark.parametrize("text, value", [("6GiB", 6 * GiB), ("512MiB", 512 << 20), ("1.5GB", 1_500_000_000),
                                         ("4g", 4 * GiB), ("1024", 1024)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "-1GiB", "six GiB", "4XB"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError, match="kv_cache_memory"):
        parse_size(bad)


def test_bad_utilization():
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        _plan(gpu_memory_utilization=1.5)


def test_cpu_engine_has_a_plan_reporting_what_it_allocated():
    import torch

    from kvant.engine.config import ModelConfig
    from kvant.engine.llm import LLM
    from kvant.engine.loader import dummy_model

    cfg = ModelConfig(architecture="LlamaForCausalLM", vocab_size=128, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                      max_position_embeddings=128, max_model_len=64, eos_token_ids=(2,))
    model = dummy_model(cfg, dtype=torch.float32)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    cases = (({"num_kv_blocks": 6}, "num_kv_blocks"), ({"kv_cache_memory": "64KiB"}, "kv_cache_memory"),
             ({}, "CPU default"))
    for kwargs, sized_by in cases:
        engine = LLM.from_model(model, None, max_model_len=64, max_num_seqs=4, **kwargs).engine
        plan, runner = engine.memory_plan, engine.runner
        kv = runner.kv_cache.numel() * runner.kv_cache.element_size()
        assert (plan.device, plan.sized_by, plan.num_blocks) == ("cpu", sized_by, runner.num_blocks)
        assert plan.kv_cache_bytes == kv and plan.kv_bytes_per_token == kv_bytes_per_token(cfg, 4)
        assert plan.weights_bytes >= weights and plan.cuda_graph_bytes == 0
        assert plan.budget_bytes == plan.weights_bytes + plan.activation_bytes + kv <= plan.total_bytes
    assert engine.memory_plan.num_blocks == 4 * 4  # CPU default: max_num_seqs full-length sequences of 4 blocks
    assert "memory on cpu:" in engine.memory_plan.breakdown()
