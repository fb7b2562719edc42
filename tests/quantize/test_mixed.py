"""Mixed-precision artifacts: several config_groups chosen per layer, loaded by kvant's engine with each layer's own
runtime module and by transformers + compressed-tensors, whose greedy tokens equal the engine's."""
import json

import pytest
import torch
from torch import nn

from kvant.artifact import manifest
from kvant.artifact.errors import KvantError
from kvant.engine.loader import load_model
from kvant.engine.quant_linear import W4A16Linear, W8A16Linear
from kvant.quantize.api import quantize
from kvant.quantize.candidates import bits_per_weight, unit_of
from kvant.quantize.recipe import recipe_from_dict

from .test_artifacts import greedy_both

MIXED = {"scheme": "W4A16", "group_size": 64, "algorithm": "gptq",
         "layer_schemes": {"re:model\\.layers\\.0\\.self_attn\\.(q|k|v)_proj": "int8",
                           "model.layers.1.mlp.down_proj": "bf16",
                           "re:model\\.layers\\.0\\.mlp\\.(gate|up)_proj": "int4-g32"},
         "calibration": {"dataset": "builtin", "num_samples": 4, "seq_len": 32}}


@pytest.fixture(scope="module")
def mixed_artifact(tiny_models, tmp_path_factory):
    return quantize(str(tiny_models["llama"]), recipe_from_dict(MIXED), tmp_path_factory.mktemp("mixed") / "art",
                    device="cpu")


def test_each_layer_gets_its_own_config_group(mixed_artifact):
    qc = json.loads((mixed_artifact / "config.json").read_text())["quantization_config"]
    kinds = sorted((g["weights"]["num_bits"], g["weights"]["group_size"]) for g in qc["config_groups"].values())
    # int8 per channel, INT4 g32 (layer 0 gate/up) and g64 (the rest; down_proj's 320 inputs fall back to g64 too)
    assert kinds == [(4, 32), (4, 64), (8, None)]
    assert qc["format"] == "mixed-precision"
    assert "model.layers.1.mlp.down_proj" in qc["ignore"] and "lm_head" in qc["ignore"]
    m = manifest.read(mixed_artifact)
    assert m["scheme"] == "w4a16"
    assert m["layer_schemes"]["model.layers.0.self_attn.qkv"] == "int8"
    assert m["layer_schemes"]["model.layers.1.mlp.down_proj"] == "bf16"
    assert m["layer_schemes"]["model.layers.0.mlp.gate_up"] == "int4-g32"
    assert m["layer_schemes"]["model.layers.1.self_attn.o_proj"] == "int4-g64"
    assert 4.25 < m["bits_per_weight"] < 16


def test_engine_builds_the_kernel_of_each_layer(mixed_artifact):
    model = load_model(mixed_artifact, dtype=torch.float32, device="cpu")
    layers = model.model.layers
    assert isinstance(layers[0].self_attn.qkv_proj, W8A16Linear)
    assert isinstance(layers[1].self_attn.qkv_proj, W4A16Linear) and layers[1].self_attn.qkv_proj.group_size == 64
    assert isinstance(layers[0].mlp.gate_up_proj, W4A16Linear) and layers[0].mlp.gate_up_proj.group_size == 32
    assert type(layers[1].mlp.down_proj) is nn.Linear


def test_transformers_generates_like_the_engine_from_a_mixed_artifact(mixed_artifact):
    ours, theirs, hf = greedy_both(mixed_artifact)
    assert ours == theirs
    # and the layer left in bf16 is a dense Linear there too
    assert type(hf.model.layers[1].mlp.down_proj).__name__ == "Linear"


def test_merged_parts_with_different_schemes_are_refused_before_any_work(tiny_models, tmp_path):
    bad = dict(MIXED, layer_schemes={"model.layers.0.self_attn.v_proj": "int8"})
    with pytest.raises(KvantError, match="self_attn.qkv"):
        quantize(str(tiny_models["llama"]), recipe_from_dict(bad), tmp_path / "art", device="cpu")
    assert not (tmp_path / "art").exists()


def test_unknown_layer_scheme_is_one_line_error():
    with pytest.raises(ValueError, match="layer scheme must be one of"):
        recipe_from_dict(dict(MIXED, layer_schemes={"model.layers.0.mlp.down_proj": "int3"}))


@pytest.mark.parametrize("name,in_features,bits", [("int4-g128", 1536, 4.125), ("int4-g128", 576, 4.25), ("int4-g32", 576, 4.5),
                                                   ("int8", 512, 8 + 16 / 512), ("bf16", 576, 16.0)])
def test_bits_per_weight_count_the_scales(name, in_features, bits):
    assert bits_per_weight(name, in_features) == pytest.approx(bits)


def test_units_follow_the_engine_merges():
    assert unit_of("model.layers.3.self_attn.k_proj") == "model.layers.3.self_attn.qkv"
    assert unit_of("model.layers.3.mlp.up_proj") == "model.layers.3.mlp.gate_up"
    assert unit_of("model.layers.3.mlp.down_proj") == "model.layers.3.mlp.down_proj"
