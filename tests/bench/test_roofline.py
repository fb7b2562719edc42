"""The roofline `kvant bench` reports against, on a tiny config with every number worked out by hand."""
import pytest

from kvant.bench.roofline import Ceilings, linear_params, model_bytes, roofline_seconds
from kvant.bench.workloads import WORKLOADS, Request, workload
from kvant.engine.config import ModelConfig

# 2 layers, hidden 64, MLP 128, 4 heads of 16 (q 64 wide), 2 kv heads (kv 32 wide), vocab 100
CFG = ModelConfig(architecture="LlamaForCausalLM", vocab_size=100, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
# per layer: qkv 64 x (64 + 2 x 32) = 8192, o 64 x 64 = 4096, gate|up|down 3 x 64 x 128 = 24576 -> 36864; 2 layers
DECODER = 73728
HEAD = 100 * 64


def test_weight_bytes_by_format():
    assert model_bytes(CFG, "bf16") == DECODER * 2 + HEAD * 2
    assert model_bytes(CFG, "fp8") == model_bytes(CFG, "int8") == DECODER + HEAD * 2
    assert model_bytes(CFG, "int4") == pytest.approx(DECODER * (0.5 + 2 / 128) + HEAD * 2)
    assert linear_params(CFG) == DECODER + HEAD


@pytest.mark.parametrize("kv, kv_bytes", [("bf16", 2), ("fp8", 1)])
def test_roofline_of_one_request(kv, kv_bytes):
    ceil = Ceilings("test card", copy_bytes_per_s=1e9, bf16_flops=1e12, fp8_flops=None, int8_ops=None)
    # prompt of 10 tokens at compute peak: 2 x linear params x 10 + 4 x layers x heads x head_dim x 10^2 / 2
    prefill = (2 * (DECODER + HEAD) * 10 + 4 * 2 * 4 * 16 * 100 / 2) / 1e12
    per_token = 2 * 2 * 2 * 16 * kv_bytes  # k and v x layers x kv heads x head dim x bytes
    # two decode steps (the first of 3 tokens comes from the prefill), each bandwidth-bound at this size
    decode = sum((DECODER * 2 + HEAD * 2 + per_token * ctx) / 1e9 for ctx in (10, 11))
    got = roofline_seconds([Request(list(range(10)), 3)], CFG, "bf16", kv, ceil)
    assert got == pytest.approx(prefill + decode, rel=1e-12)


def test_workloads_are_seeded_and_sized():
    assert [len(workload(name)) for name in WORKLOADS] == [256, 128, 512, 1024, 1]
    assert workload("W1") == workload("W1") and sum(r.max_tokens for r in workload("W1")) == 133966
    assert {len(r.prompt_token_ids) for r in workload("W3", limit=4)} == {2048} and len(workload("W3", 4)) == 4
    with pytest.raises(ValueError, match="workload must be one of"):
        workload("W9")
