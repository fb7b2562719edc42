"""`kvant eval`'s lm-eval options: --num-fewshot/--seed reach simple_evaluate, --output-path files load in lm-eval's
own result tools, --log-samples writes lm-eval's samples files."""
import json

import pytest

from kvant.eval.lm_eval_output import parse_seed
from kvant.eval.runner import EvalOptions, evaluate_artifact

from .test_runner import _artifact


def test_output_path_loads_in_lm_evals_result_tools(default_model, shared_data, tmp_path, kvant_home,
                                                    engine_factory):
    from lm_eval.utils import (get_latest_filename, get_results_filenames, get_sample_results_filenames,
                               make_table)

    art = _artifact(default_model, tmp_path / "art")
    out_dir = tmp_path / "lm-eval-out"
    options = EvalOptions(tasks=("kvant_arc_easy",), limit=3, data_dir=shared_data, generative=None,
                          lm_eval_kwargs={"num_fewshot": 1, **parse_seed("7")}, output_path=out_dir,
                          log_samples=True)
    evaluate_artifact(art, options=options, llm_factory=engine_factory)

    files = [str(p) for p in out_dir.rglob("*") if p.is_file()]
    results_files = get_results_filenames(files)
    assert len(results_files) == 2  # artifact and base, each in its own model folder
    for name in results_files:
        data = json.loads(open(name).read())
        assert data["n-shot"]["kvant_arc_easy"] == 1
        assert data["config"]["random_seed"] == 7 and data["config"]["fewshot_seed"] == 7
        assert data["config"]["limit"] == 3
        table = make_table(data)
        assert "kvant_arc_easy" in table and "acc" in table
    latest = get_latest_filename(results_files)
    assert latest in results_files
    samples = get_sample_results_filenames(files)
    assert len(samples) == 2
    rows = [json.loads(line) for line in open(samples[0])]
    assert len(rows) == 3 and {"doc_id", "arguments", "resps"} <= set(rows[0])
    assert {p.parent.name for p in map(__import__("pathlib").Path, results_files)} == {
        str(art).replace("/", "__"), str(default_model).replace("/", "__")}


@pytest.mark.parametrize("text, expected", [
    ("5", (5, 5, 5, 5)), ("0,1234,1234,1234", (0, 1234, 1234, 1234)), ("1,None,3,4", (1, None, 3, 4))])
def test_seed_takes_lm_evals_forms(text, expected):
    assert tuple(parse_seed(text).values()) == expected


@pytest.mark.parametrize("text", ["1,2", "x", "1,2,3,y"])
def test_bad_seed_is_one_line(text):
    with pytest.raises(ValueError, match="seed must be"):
        parse_seed(text)


def test_log_samples_needs_output_path():
    with pytest.raises(ValueError, match="log_samples needs output_path"):
        EvalOptions(log_samples=True)


def test_model_args_win_over_lm_evals_own_flags(monkeypatch):
    # `kvant lm-eval run --model kvant --model_args pretrained=M,device=cpu` while lm-eval passes its --device too
    from kvant.eval.lm import KvantLM

    seen = {}
    monkeypatch.setattr(KvantLM, "__init__", lambda self, **kwargs: seen.update(kwargs))
    KvantLM.create_from_arg_string("pretrained=/m,device=cpu,max_length=64",
                                   {"device": "cuda", "batch_size": 8, "max_batch_size": None})
    assert seen == {"pretrained": "/m", "device": "cpu", "max_length": 64, "batch_size": 8}
