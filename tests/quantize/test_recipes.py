from pathlib import Path

import pytest
import yaml

from kvant.artifact.errors import KvantError
from kvant.quantize.recipe import RECIPES_DIR, load_recipe, recipe_from_dict
from kvant.artifact.schemes import fallback_group_size, get_scheme

SHIPPED = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def test_every_required_recipe_ships():
    assert {"fp8-dynamic", "fp8-static", "w8a8-int8", "w8a16-int8", "w4a16-gptq", "w4a16-awq", "w4a16-gptq-g64",
            "fp8-dynamic-kv"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_loads_and_round_trips(name):
    recipe = load_recipe(name)
    assert recipe_from_dict(recipe.to_dict()) == recipe
    raw = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
    assert recipe.scheme == raw["scheme"]


def test_w8a8_recipe_uses_smoothquant_and_gptq():
    r = load_recipe("w8a8-int8")
    assert r.smoothing_strength == 0.5 and r.uses_gptq and r.quant_scheme.input_activations.strategy == "token"


@pytest.mark.parametrize("data, key", [
    ({"scheme": "W4A16", "grup_size": 64}, "grup_size"),
    ({"scheme": "W4A16", "calibration": {"num_sample": 8}}, "num_sample"),
    ({"scheme": "W4A17"}, "scheme"),
    ({"scheme": "W4A16", "group_size": 60}, "group_size"),
    ({"scheme": "FP8_DYNAMIC", "group_size": 64}, "group_size"),
    ({"scheme": "W4A16", "algorithm": "gptqq"}, "algorithm"),
    ({"scheme": "W4A16", "algorithm": "rtn", "dampening_frac": 0.1}, "dampening_frac"),
    ({"scheme": "W4A16", "algorithm": "gptq", "n_grid": 10}, "n_grid"),
    ({"scheme": "W4A16", "smoothing_strength": 0.5}, "smoothing_strength"),
    ({"scheme": "W8A8_INT8", "smoothing_strength": 1.5}, "smoothing_strength"),
    ({"scheme": "W4A16", "algorithm": "gptq", "actorder": "group"}, "actorder"),
    ({"scheme": "W4A16", "kv_cache_scheme": "int8"}, "kv_cache_scheme"),
    ({"scheme": "W4A16", "observer": "percentile"}, "observer"),
    ({"scheme": "W4A16", "calibration": {"num_samples": 0}}, "num_samples"),
    ({"group_size": 64}, "scheme"),
])
def test_bad_recipe_names_the_key(data, key):
    with pytest.raises(ValueError, match=key):
        recipe_from_dict(data)


def test_bad_recipe_file_is_a_one_line_kvant_error(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("scheme: W4A16\ngroupsize: 64\n")
    with pytest.raises(KvantError, match="groupsize") as info:
        load_recipe(path)
    assert "\n" not in str(info.value)
    with pytest.raises(KvantError, match="neither a file nor a shipped recipe"):
        load_recipe("no-such-recipe")


def test_aliases_and_group_size_fallback():
    assert get_scheme("W8A8") == get_scheme("W8A8_INT8") and get_scheme("fp8") == get_scheme("FP8_STATIC")
    assert get_scheme("W4A16").weights.group_size == 128
    assert get_scheme("W4A16", 64).weights.group_size == 64
    # SmolLM2-135M: hidden 576 (= 4.5 * 128 = 9 * 64), intermediate 1536 (= 12 * 128)
    assert fallback_group_size(576, 128) == 64
    assert fallback_group_size(1536, 128) == 128
    assert fallback_group_size(584, 128) == 8
    assert fallback_group_size(580, 128) is None
