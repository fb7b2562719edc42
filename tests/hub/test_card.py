import copy

import pytest
import yaml
from huggingface_hub import ModelCard

from kvant.artifact.card import build_card, card_text

MANIFEST = {
    "format": 1, "kvant_version": "0.1.0", "scheme": "fp8-dynamic", "kv_cache_dtype": "fp8",
    "base_model": {"name": "Qwen/Qwen3-0.6B", "revision": "c1899de289a04d12100db370d81485cdf75e47ca",
                   "architecture": "Qwen3ForCausalLM", "license": "apache-2.0"},
    "recipe": {"scheme": "fp8-dynamic", "targets": ["Linear"], "ignore": ["lm_head"]},
    "calibration": {}, "gate": {"min_recovery": 0.99}, "files": {},
}
RESULTS = {
    "format": 1, "lm_eval_version": "0.4.13", "limit": None, "gate": {"min_recovery": 0.99},
    "tasks": [{"task": "gsm8k", "metric": "exact_match", "base": 0.40, "base_stderr": 0.013, "quant": 0.397,
               "quant_stderr": 0.013, "recovery": 0.9925, "recovery_stderr": 0.004, "passed": True}],
    "perplexity": None, "generative": None, "passed": True,
}


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


# scheme -> tags a user would filter on, written out by hand
@pytest.mark.parametrize("scheme,expected", [
    ("w4a16", {"int4", "w4a16"}), ("w8a16", {"int8", "w8a16"}), ("w8a8-int8", {"int8", "w8a8"}),
    ("fp8-dynamic", {"fp8", "w8a8"}), ("fp8-static", {"fp8", "w8a8"}),
])
def test_scheme_tags(scheme, expected):
    m = copy.deepcopy(MANIFEST) | {"scheme": scheme, "kv_cache_dtype": "auto"}
    tags = set(_front_matter(card_text(m, None, "me/q"))["tags"])
    assert expected <= tags
    assert {"kvant", "compressed-tensors", "vllm"} <= tags
    assert not ({"int4", "int8", "fp8"} - expected) & tags  # no other weight format claimed


def test_front_matter_fields():
    meta = _front_matter(card_text(MANIFEST, RESULTS, "me/qwen3-fp8"))
    assert meta["base_model"] == "Qwen/Qwen3-0.6B"
    assert meta["base_model_relation"] == "quantized"
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["license"] == "apache-2.0"
    assert "fp8-kv-cache" in meta["tags"]
    assert "datasets" not in meta  # data-free scheme: no calibration set
    [entry] = meta["model-index"]
    assert entry["name"] == "qwen3-fp8"
    [res] = entry["results"]
    assert res["dataset"]["type"] == "gsm8k"
    assert res["metrics"] == [{"type": "exact_match", "value": 0.397}]
    assert res["source"]["name"] == "lm-evaluation-harness 0.4.13"


def test_body_has_revision_recipe_recovery_and_usage():
    card = build_card(MANIFEST, RESULTS, "me/qwen3-fp8")
    text = card.text
    assert MANIFEST["base_model"]["revision"] in text
    assert yaml.safe_load(text.split("```yaml\n")[1].split("```")[0]) == MANIFEST["recipe"]
    assert "| gsm8k | exact_match | 0.4000 ± 0.0130 | 0.3970 ± 0.0130 | 99.25% | pass |" in text
    # MANIFEST has an FP8 KV cache: both engines are told to use it
    for command in ("kvant serve me/qwen3-fp8 --kv-cache-dtype fp8\n", "vllm serve me/qwen3-fp8 --kv-cache-dtype fp8\n",
                    'from_pretrained("me/qwen3-fp8"'):
        assert command in text
    plain = card_text(MANIFEST | {"kv_cache_dtype": "auto"}, RESULTS, "me/qwen3-fp8")
    assert "kvant serve me/qwen3-fp8\n" in plain and "--kv-cache-dtype" not in plain


def test_recipe_file_text_is_used_verbatim():
    recipe = "# as run\nscheme: fp8-dynamic\nignore: [lm_head]\n"
    assert f"```yaml\n{recipe}```" in card_text(MANIFEST, RESULTS, "me/q", recipe_yaml=recipe)


def test_local_base_and_local_calibration_are_not_hub_ids():
    m = copy.deepcopy(MANIFEST)
    m["base_model"]["name"] = "/models/my-llama"
    m["calibration"] = {"source": "./calib.jsonl", "num_samples": 8, "seq_len": 128, "sha256": "ab" * 32}
    meta = _front_matter(card_text(m, None, "me/q"))
    assert "base_model" not in meta and "base_model_relation" not in meta and "datasets" not in meta
    assert "model-index" not in meta


def test_card_is_deterministic_and_parses():
    a, b = card_text(MANIFEST, RESULTS, "me/q"), card_text(copy.deepcopy(MANIFEST), copy.deepcopy(RESULTS), "me/q")
    assert a == b
    parsed = ModelCard(a)
    assert parsed.data.eval_results[0].metric_value == RESULTS["tasks"][0]["quant"]


def test_unknown_scheme_is_a_value_error():
    with pytest.raises(ValueError, match="scheme must be one of .*got .int3."):
        card_text(MANIFEST | {"scheme": "int3"}, None, "me/q")


@pytest.mark.parametrize("recipe,expected", [
    ({"algorithm": "rtn", "smoothing_strength": None, "dampening_frac": 0.01}, set()),
    ({"algorithm": "gptq", "actorder": "static"}, {"gptq"}),
    ({"algorithm": "awq+gptq"}, {"awq", "gptq"}),
    ({"algorithm": "rtn", "smoothing_strength": 0.8}, {"smoothquant"}),
])
def test_algorithm_tags_come_from_the_recipe_algorithm(recipe, expected):
    m = copy.deepcopy(MANIFEST) | {"recipe": recipe}
    tags = set(_front_matter(card_text(m, None, "me/q"))["tags"])
    assert tags & {"gptq", "awq", "smoothquant"} == expected


def test_data_free_calibration_record():
    # what `kvant quantize` records for a data-free scheme
    m = copy.deepcopy(MANIFEST) | {"calibration": {"source": None, "num_samples": 0, "seq_len": 0, "sha256": None}}
    text = card_text(m, None, "me/q")
    assert "datasets" not in _front_matter(text)
    assert "No calibration data (data-free quantization)." in text


@pytest.mark.parametrize("source,shown,listed", [
    ("builtin", "kvant's built-in sample", False),
    ("HuggingFaceH4/ultrachat_200k",
     "[HuggingFaceH4/ultrachat_200k](https://huggingface.co/datasets/HuggingFaceH4/ultrachat_200k)", True),
    ("/data/calib.jsonl", "`/data/calib.jsonl`", False),
])
def test_calibration_source(source, shown, listed):
    m = copy.deepcopy(MANIFEST) | {"calibration": {"source": source, "num_samples": 256, "seq_len": 512,
                                                   "sha256": "cd" * 32}}
    text = card_text(m, None, "me/q")
    assert f"256 samples of 512 tokens from {shown}" in text
    assert ("datasets" in _front_matter(text)) == listed
