"""A mixed-precision artifact of the real default model (several config_groups: INT4 g64 and g32, INT8, one Linear
left in bf16) loads in transformers + compressed-tensors, and its greedy output equals kvant's engine on it.
Data-free (round-to-nearest, read straight from the checkpoint) so it takes seconds to write."""
import json
import warnings

import pytest
import torch

from kvant.engine.registry import default_model_path
from kvant.quantize.api import quantize
from kvant.quantize.recipe import recipe_from_dict

from .test_default_model import QUESTION, WEIGHT_ONLY_REL, _hf_logits, _kvant_logits, _rel

MIXED = {"scheme": "W4A16", "group_size": 64, "algorithm": "rtn", "observer": "mse",
         "layer_schemes": {"re:model\\.layers\\.0\\.self_attn\\.(q|k|v)_proj": "int8",
                           "model.layers.11.mlp.down_proj": "bf16",
                           "re:model\\.layers\\.29\\.mlp\\.(gate|up)_proj": "int4-g32"}}


@pytest.mark.slow
def test_mixed_default_model_artifact_generates_alike_in_transformers_and_kvant(tmp_path):
    if not (default_model_path() / "config.json").is_file():
        pytest.skip("the default model is not pulled (kvant pull)")
    art = quantize(str(default_model_path()), recipe_from_dict(MIXED), tmp_path / "art", device="cpu")
    qc = json.loads((art / "config.json").read_text())["quantization_config"]
    kinds = sorted((g["weights"]["num_bits"], g["weights"]["group_size"]) for g in qc["config_groups"].values())
    assert kinds == [(4, 32), (4, 64), (8, None)] and "model.layers.11.mlp.down_proj" in qc["ignore"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kvant.engine import LLM, SamplingParams

    tok = AutoTokenizer.from_pretrained(art)
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], tokenize=False,
                                   add_generation_prompt=True) + QUESTION
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert _rel(_kvant_logits(art, ids), _hf_logits(art, ids)) < WEIGHT_ONLY_REL  # weight-only: the same arithmetic
    llm = LLM(str(art), device="cpu", dtype="float32", max_model_len=256, num_kv_blocks=16, enforce_eager=True)
    ours = llm.generate([ids], SamplingParams(temperature=0, max_tokens=8))[0].outputs[0].token_ids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = AutoModelForCausalLM.from_pretrained(art, dtype=torch.float32).eval()
    prompt = torch.tensor([ids])
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=len(ours),
                         pad_token_id=tok.eos_token_id)[0, len(ids):].tolist()
    assert list(ours) == theirs and "Paris" in tok.decode(ours)
    # transformers applied each config group to its Linears (not a plain bf16 load that ignored them)
    layers = hf.model.layers
    weights = {name: getattr(getattr(m, "quantization_scheme", None), "weights", None) for name, m in (
        ("int8", layers[0].self_attn.q_proj), ("int4-g32", layers[29].mlp.gate_proj),
        ("int4-g64", layers[5].self_attn.o_proj), ("bf16", layers[11].mlp.down_proj))}
    assert (weights["int8"].num_bits, weights["int8"].strategy) == (8, "channel")
    assert (weights["int4-g32"].num_bits, weights["int4-g32"].group_size) == (4, 32)
    assert (weights["int4-g64"].num_bits, weights["int4-g64"].group_size) == (4, 64)
    assert weights["bf16"] is None and type(layers[11].mlp.down_proj).__name__ == "Linear"
    with torch.no_grad():
        assert not torch.equal(hf(prompt).logits[0, -16:], _hf_logits(default_model_path(), ids))  # really quantized
