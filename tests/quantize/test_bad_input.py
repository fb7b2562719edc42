"""Refusals before any work, group-size fallback, and atomic output: cancel and failures leave nothing half-written."""
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from kvant.artifact.errors import KvantError
from kvant.artifact.progress import CancelToken, Cancelled
from kvant.artifact import manifest
from kvant.quantize import artifact
from kvant.quantize.api import quantize
from kvant.quantize.calibrate import Summary, plan_linears
from kvant.quantize.recipe import load_recipe, shipped_recipe_names

FAST = "w8a16-int8"  # data-free RTN: the quickest full run


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".kvant-" in p.name)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_artifact(tiny_models, tmp_path_factory) -> Path:
    return quantize(str(tiny_models["llama"]), FAST, tmp_path_factory.mktemp("art") / "w8a16", device="cpu")


def test_unknown_recipe_name_lists_the_shipped_ones(tiny_models, tmp_path):
    with pytest.raises(KvantError, match="w4a16-gptq-g4") as info:
        quantize(str(tiny_models["llama"]), "w4a16-gptq-g4", tmp_path / "out")
    for name in shipped_recipe_names():
        assert name in str(info.value)
    assert not (tmp_path / "out").exists()


def test_recipe_with_an_unknown_field_names_it(tiny_models, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("scheme: W4A16\nalgorithm: gptq\ndampening: 0.1\n")
    with pytest.raises(KvantError, match="'dampening'"):
        quantize(str(tiny_models["llama"]), path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_group_size_fallback_is_warned_and_recorded(tiny_models, tmp_path, caplog):
    # the tiny Llama's down_proj has 320 inputs: 128 does not divide it, 64 does
    with caplog.at_level(logging.WARNING, logger="kvant.quantize.calibrate"):
        recipe = load_recipe("w4a16-gptq").with_calibration(num_samples=2, seq_len=16)
        out = quantize(str(tiny_models["llama"]), recipe, tmp_path / "out", device="cpu")
    assert any("down_proj" in r.message and "320" in r.message for r in caplog.records)
    data = manifest.read(out)
    assert data["group_size_fallbacks"] == {"down_proj": 64}
    groups = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]
    assert sorted(g["weights"]["group_size"] for g in groups.values()) == [64, 128]
    assert "down_proj" in (out / "README.md").read_text()


def test_default_model_shapes_fall_back_from_128_to_64():
    # SmolLM2-135M: hidden 576 = 4.5 * 128; the 1536-input down_proj keeps 128
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=576, intermediate_size=1536, num_hidden_layers=1,
                         num_attention_heads=9, num_key_value_heads=3)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    summary = Summary()
    plan = plan_linears(model, load_recipe("w4a16-gptq"), summary)
    assert summary.group_size_fallbacks == {"q_proj": 64, "k_proj": 64, "v_proj": 64, "o_proj": 64,
                                            "gate_proj": 64, "up_proj": 64}
    assert plan["model.layers.0.mlp.down_proj"].weights.group_size == 128
    assert plan["model.layers.0.self_attn.q_proj"].weights.group_size == 64
    assert "lm_head" not in plan


def test_group_size_nothing_divides_is_refused_naming_the_layer(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=100, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, architectures=["LlamaForCausalLM"])
    LlamaForCausalLM(config).save_pretrained(tmp_path / "odd")
    shutil.copy2(Path.home() / ".cache/kvant/models/SmolLM2-135M-Instruct/tokenizer.json", tmp_path / "odd")
    with pytest.raises(KvantError, match=r"model\.layers\.0\.mlp\.down_proj: input size 100 .*group size 128"):
        quantize(str(tmp_path / "odd"), "w4a16-gptq", tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_existing_out_needs_force(tiny_models, tiny_artifact, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(KvantError, match="already exists.*--force"):
        quantize(str(tiny_models["llama"]), FAST, out)
    assert _snapshot(out) == {"keep.txt": b"mine"}


def test_force_replaces_out_completely(tiny_models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    quantize(str(tiny_models["llama"]), FAST, out, force=True, device="cpu")
    assert not (out / "stale.txt").exists()
    manifest.verify(out)
    assert _leftovers(tmp_path) == []


def test_out_cannot_be_the_model_folder_even_with_force(tiny_models):
    before = _snapshot(tiny_models["llama"])
    with pytest.raises(KvantError, match="is the model folder itself"):
        quantize(str(tiny_models["llama"]), FAST, tiny_models["llama"], force=True)
    assert _snapshot(tiny_models["llama"]) == before


def test_unsupported_architecture(tmp_path):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(KvantError, match="GPT2LMHeadModel is not supported.*LlamaForCausalLM"):
        quantize(str(tmp_path / "gpt2"), FAST, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_already_quantized_input(tiny_artifact, tmp_path):
    with pytest.raises(KvantError, match="already quantized.*compressed-tensors"):
        quantize(str(tiny_artifact), FAST, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_model_folder(tmp_path):
    with pytest.raises(KvantError, match="no config.json"):
        quantize(str(tmp_path), FAST, tmp_path / "out")


@pytest.mark.parametrize("model_free", [True, False])
@pytest.mark.parametrize("at_stage", ["layer 1/2", "layer 2/2"])
def test_cancel_mid_run_leaves_nothing(tiny_models, tmp_path, at_stage, model_free):
    cancel = CancelToken()
    stages = []

    def progress(stage, done, total, message):
        stages.append(stage)
        if message.startswith(at_stage):
            cancel.cancel()

    with pytest.raises(Cancelled, match="quantization cancelled"):
        quantize(str(tiny_models["llama"]), FAST, tmp_path / "out", progress=progress, cancel=cancel, device="cpu",
                 model_free=model_free)
    assert stages.count("quantize") == int(at_stage[-3]) and "done" not in stages
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True])
def test_failure_while_writing_leaves_no_half_artifact(tiny_models, tiny_artifact, tmp_path, monkeypatch, existing):
    out = tmp_path / "out"
    if existing:
        shutil.copytree(tiny_artifact, out)
    before = _snapshot(out) if existing else None
    written = []

    def fail(folder, recipe):  # after weights, config and tokenizer files are already in the temp folder
        written.extend(p.name for p in folder.iterdir())
        raise OSError("disk full")

    monkeypatch.setattr(artifact, "write_recipe", fail)
    with pytest.raises(OSError, match="disk full"):
        quantize(str(tiny_models["llama"]), FAST, out, force=True, device="cpu")
    assert "model.safetensors" in written
    assert _leftovers(tmp_path) == []
    if existing:
        assert _snapshot(out) == before
        manifest.verify(out)
    else:
        assert not out.exists()


def test_failed_final_rename_keeps_the_existing_artifact(tiny_models, tiny_artifact, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(tiny_artifact, out)
    before = _snapshot(out)
    real_rename = Path.rename

    def rename(self, target):
        if ".kvant-tmp-" in self.name:  # moving the finished temp folder into place
            raise OSError("rename failed")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        quantize(str(tiny_models["llama"]), FAST, out, force=True, device="cpu")
    monkeypatch.undo()
    assert _snapshot(out) == before
    assert _leftovers(tmp_path) == []
