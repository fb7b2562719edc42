import hashlib
import json
import shutil

import pytest

from kvant.artifact.errors import KvantError
from kvant.eval.runner import EvalOptions, evaluate_artifact
from kvant.tui.cli import main

SMALL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


@pytest.fixture
def no_model_loads(monkeypatch):
    import kvant.eval.lm

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(kvant.eval.lm.KvantLM, "__init__", refuse)


@pytest.fixture
def artifact(default_model, tmp_path):
    # config and tokenizer are all the input checks read; no weights needed
    out = tmp_path / "artifact"
    out.mkdir()
    for name in SMALL_FILES:
        shutil.copyfile(default_model / name, out / name)
    manifest = {"format": 1, "scheme": "w4a16", "base_model": {"name": "smollm2-135m", "path": str(default_model),
                                                              "architecture": "LlamaForCausalLM"},
                "files": {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in SMALL_FILES}}
    (out / "kvant.json").write_text(json.dumps(manifest))
    return out


def test_folder_without_manifest(tmp_path, no_model_loads):
    with pytest.raises(KvantError, match="no kvant.json"):
        evaluate_artifact(tmp_path)


def test_unknown_task(artifact, shared_data, no_model_loads):
    with pytest.raises(KvantError, match="unknown task no_such_task"):
        evaluate_artifact(artifact, options=EvalOptions(tasks=("kvant_piqa", "no_such_task"), data_dir=shared_data))


def test_local_task_without_data_dir(artifact, no_model_loads):
    with pytest.raises(KvantError, match="--data-dir"):
        evaluate_artifact(artifact, options=EvalOptions(tasks=("kvant_piqa",)))


def test_base_of_another_architecture(artifact, tmp_path, no_model_loads):
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((artifact / "config.json").read_text())
    cfg.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2")
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(KvantError, match="architecture is Qwen2ForCausalLM in the base"):
        evaluate_artifact(artifact, base=str(other))


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "kvant.json" in err and "\n" not in err
