import hashlib
import json
import shutil

import pytest

from kvant.eval.generative import GenerativeConfig
from kvant.eval.runner import EvalOptions, evaluate_artifact

MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "model.safetensors")


def _artifact(default_model, path, scheme="fp8-dynamic"):
    # an "artifact" holding the base weights unchanged: every score must be recovered exactly
    path.mkdir()
    for name in MODEL_FILES:
        if (default_model / name).exists():
            shutil.copyfile(default_model / name, path / name)
    manifest = {"format": 1, "scheme": scheme, "base_model": {"name": "smollm2-135m", "path": str(default_model)},
                "gate": {"min_recovery": None}, "files": {}}
    (path / "kvant.json").write_text(json.dumps(manifest))
    return path


def test_identical_weights_recover_fully_and_base_is_cached(default_model, shared_data, tmp_path, kvant_home,
                                                          engine_factory):
    built = []

    def factory(path):
        built.append(path)
        return engine_factory(path)

    events = []
    options = EvalOptions(tasks=("piqa", "kvant_arc_easy"), limit=4, data_dir=shared_data,
                          generative=GenerativeConfig(max_tokens=6))
    first = _artifact(default_model, tmp_path / "a1")
    report = evaluate_artifact(first, options=options, llm_factory=factory,
                               progress=lambda stage, done, total, message: events.append((stage, done, total,
                                                                                           message)))
    assert built == [first, default_model]
    assert [t.task for t in report.tasks] == ["kvant_arc_easy", "kvant_piqa"]
    assert all(t.recovery == 1.0 and t.passed for t in report.tasks)
    assert report.generative["prefix_agreement"] == 1.0 and report.generative["ppl_ratio"] == pytest.approx(1.0)
    assert report.passed and report.gate.min_recovery == 0.99
    assert events and events[-1][0] == "base" and events[-1][3].startswith("base: ")
    assert {e[0] for e in events} == {"artifact", "base"} and all(0 < done <= total for _, done, total, _ in events)

    results = json.loads((first / "eval" / "results.json").read_text())
    assert results["passed"] is True and results["limit"] == 4
    files = json.loads((first / "kvant.json").read_text())["files"]
    expected = hashlib.sha256((first / "eval" / "results.json").read_bytes()).hexdigest()
    assert files["eval/results.json"] == expected and "kvant.json" not in files

    # a second artifact of the same base: base task results come from the cache, so only the artifact is built
    built.clear()
    second = _artifact(default_model, tmp_path / "a2", scheme="w4a16")
    report2 = evaluate_artifact(second, options=EvalOptions(tasks=options.tasks, limit=4, data_dir=shared_data,
                                                            generative=None), llm_factory=factory)
    assert built == [second]
    assert [(t.base, t.quant) for t in report2.tasks] == [(t.base, t.quant) for t in report.tasks]
    assert report2.gate.min_recovery == 0.96
    assert any((kvant_home / "eval" / "base-cache").iterdir())


def test_cancel_stops_before_anything_is_written(default_model, shared_data, tmp_path, kvant_home, engine_factory):
    from kvant.artifact.progress import CancelToken, Cancelled

    cancel = CancelToken()
    seen = []

    def progress(stage, done, total, message):
        seen.append(stage)
        cancel.cancel()  # at the first chunk of the artifact's requests

    art = _artifact(default_model, tmp_path / "a")
    before = (art / "kvant.json").read_bytes()
    with pytest.raises(Cancelled, match="evaluation cancelled"):
        evaluate_artifact(art, options=EvalOptions(tasks=("kvant_arc_easy",), limit=2, data_dir=shared_data,
                                                   generative=None),
                          llm_factory=engine_factory, progress=progress, cancel=cancel)
    assert seen == ["artifact"]  # stopped after the first chunk: the base never ran
    assert not (art / "eval").exists() and (art / "kvant.json").read_bytes() == before
    assert not (kvant_home / "eval" / "base-cache").exists()
