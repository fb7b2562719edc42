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


# ---- memory-honest serving (issue 21): logits only where needed, a --gpu-memory cap, refusal before allocation
def test_activation_peak_is_bounded_by_the_token_budget_not_by_full_vocab_logits():
    # 8B, default engine sizes: the forward's MLP/hidden buffers or one logits row per sequence, never [T, V]
    from kvant.engine.memory import PROMPT_LOGPROB_BYTES_PER_LOGIT, PROMPT_LOGPROB_ROWS, SAMPLE_BYTES_PER_LOGIT
    from kvant.engine.memory import activation_peak_bytes

    t, seqs, v = 8192, 256, LLAMA8B.vocab_size
    forward = t * 3 * 14336 * 2 + 4 * t * 4096 * 2
    logits = t * 4096 * 2 + seqs * v * SAMPLE_BYTES_PER_LOGIT + PROMPT_LOGPROB_ROWS * v * PROMPT_LOGPROB_BYTES_PER_LOGIT
    peak = activation_peak_bytes(LLAMA8B, t, seqs, 2)
    assert peak == max(forward, logits) and peak <= 2 * GiB
    assert peak < t * v * 4  # one fp32 logits row per prefill token alone would be 3.9 GiB
    # halving the chunked-prefill budget shrinks the forward part
    assert activation_peak_bytes(LLAMA8B, 512, 1, 2) < activation_peak_bytes(LLAMA8B, 8192, 1, 2)


def test_gpu_memory_cap_plans_a_24gib_card_on_a_larger_one():
    from kvant.engine.memory import capped_total

    total = capped_total(141 * GiB, parse_size("24GiB"))
    assert total == 24 * GiB and capped_total(16 * GiB, 24 * GiB) == 16 * GiB and capped_total(5, None) == 5
    p = _plan(total_bytes=total, used_by_others=GiB // 2, weights_bytes=int(5.47 * GiB), max_num_batched_tokens=8192,
              max_num_seqs=256, graph_batch_sizes=36, capped=True, max_model_len=32768)
    assert p.total_bytes == 24 * GiB and p.activation_bytes <= 2 * GiB
    assert p.kv_tokens >= 100_000, p.breakdown()  # the target for 8B INT4 on a 24 GB card


def test_model_that_cannot_fit_is_refused_with_numbers_and_what_to_change():
    with pytest.raises(KvantError) as err:  # bf16 8B weights on a 16 GiB cap
        _plan(total_bytes=16 * GiB, used_by_others=0, weights_bytes=int(14.96 * GiB), capped=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("needs 15.0 GiB for weights")
    assert "cap is 14.4 GiB (0.9 of 16.0 GiB (--gpu-memory))" in msg and "try W4A16" in msg
    # weights fit, the activation peak does not: the token budget is what to change
    with pytest.raises(KvantError, match="lower --max-num-batched-tokens"):
        _plan(total_bytes=8 * GiB, used_by_others=0, weights_bytes=int(5.5 * GiB), max_num_batched_tokens=65536)


def test_int4_artifact_too_big_names_a_larger_card(tmp_path):
    import json

    from kvant.engine.config import ModelConfig

    raw = json.loads((REPO / "bench" / "configs" / "llama-3.1-8b.json").read_text())
    raw["quantization_config"] = {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128}}}}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    cfg = ModelConfig.from_pretrained(tmp_path)
    with pytest.raises(KvantError, match="larger --gpu-memory or card"):
        plan_memory(cfg, total_bytes=4 * GiB, used_by_others=0, weights_bytes=int(5.47 * GiB),
                    gpu_memory_utilization=0.9, kv_cache_memory=None, max_model_len=8192, max_num_batched_tokens=2048,
                    max_num_seqs=64, block_size=16, kv_dtype_bytes=2, act_bytes=2, graph_batch_sizes=8)


def test_serve_refuses_before_any_weight_is_allocated(default_model, monkeypatch):
    # a CUDA card simulated on the CPU: the refusal must come before load_model is ever called
    import torch

    from kvant.engine import llm as llm_mod
    from kvant.engine import loader

    monkeypatch.setattr(llm_mod, "pick_device", lambda device: "cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)

    def no_load(*a, **k):
        raise AssertionError("weights were loaded before the plan refused the model")

    monkeypatch.setattr(loader, "load_model", no_load)
    with pytest.raises(KvantError, match=r"^needs 0\.\d GiB for weights .*cap is 0\.1 GiB .*try W4A16"):
        llm_mod.build_engine(str(default_model), load_tokenizer=False, gpu_memory="128MiB")
    with pytest.raises(ValueError, match="gpu_memory must be a size"):
        llm_mod.build_engine(str(default_model), gpu_memory="lots")
