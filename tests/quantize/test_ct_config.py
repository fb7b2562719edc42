"""The artifact's quantization_config passes compressed-tensors' own validation, the parse transformers and vLLM run."""
import json

import pytest

from kvant.engine.errors import KvantError
from kvant.quantize.api import quantize
from kvant.quantize.artifact import validate_quantization_config
from kvant.quantize.recipe import load_recipe


@pytest.mark.parametrize("recipe", ["fp8-dynamic", "w8a16-int8"])
def test_artifact_config_validates_through_compressed_tensors(tiny_models, tmp_path, recipe):
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig

    art = quantize(str(tiny_models["llama"]), load_recipe(recipe), tmp_path / "art", device="cpu")
    config = json.loads((art / "config.json").read_text())
    qconfig = config["quantization_config"]
    parsed = QuantizationConfig.model_validate(qconfig)
    assert parsed.quant_method == "compressed-tensors" and parsed.ignore == qconfig["ignore"]
    group = next(iter(parsed.config_groups.values()))
    written = next(iter(qconfig["config_groups"].values()))
    assert group.weights.num_bits == written["weights"]["num_bits"] == 8
    assert group.weights.type == written["weights"]["type"] and group.format == written["format"]
    # the path transformers' CompressedTensorsHfQuantizer takes for this config
    from transformers.utils.quantization_config import CompressedTensorsConfig

    compressor = ModelCompressor.from_compression_config(CompressedTensorsConfig.from_dict(qconfig))
    assert compressor is not None and compressor.quantization_config.format == qconfig["format"]


def test_a_config_compressed_tensors_reads_differently_is_refused():
    bad = {"config_groups": {"group_0": {"targets": ["Linear"], "format": "pack-quantized", "output_activations": None,
                                         "input_activations": None,
                                         "weights": {"num_bits": 4, "type": "int", "symmetric": "true",
                                                     "strategy": "group", "group_size": 128}}},
           "format": "pack-quantized", "global_compression_ratio": None, "ignore": ["lm_head"],
           "kv_cache_scheme": None, "quant_method": "compressed-tensors", "quantization_status": "compressed"}
    with pytest.raises(KvantError, match="symmetric") as info:
        validate_quantization_config(bad)  # "true" (a string) reads back as the boolean True
    assert "\n" not in str(info.value)
    bad["config_groups"]["group_0"]["weights"]["num_bits"] = "four"
    with pytest.raises(KvantError, match="rejected by compressed-tensors"):
        validate_quantization_config(bad)
