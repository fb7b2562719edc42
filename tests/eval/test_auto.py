"""The auto search on a tiny random model: per-layer sensitivity (measured once, then reused), the greedy path, the
binary search over validated points, and what is left on disk when the target is unreachable or the run stops.
The gate is a stand-in here (passes from a given bits per weight up): what it measures is tested in tests/eval."""
import dataclasses
import json

import pytest
import torch

from kvant.artifact import manifest
from kvant.artifact.gate import Gate
from kvant.eval.auto import GateNotReached, quantize_auto
from kvant.eval.report import EvalReport, TaskRecovery, write_report
from kvant.quantize import sensitivity as S
from kvant.quantize.auto_plan import greedy_path, levels
from kvant.quantize.recipe import load_recipe

@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KVANT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def recipe(**changes):
    r = load_recipe("auto").with_calibration(num_samples=4, seq_len=32)
    return dataclasses.replace(r, sensitivity_samples=2, **changes)


def gate_from(bits: float, calls: list):
    # a gate that passes every point of at least `bits` bits per weight, recording what it saw
    def validate(folder):
        m = manifest.read(folder)
        calls.append(m["bits_per_weight"])
        rec = 0.9 + 0.01 * m["bits_per_weight"]
        passed = m["bits_per_weight"] >= bits
        task = TaskRecovery("stand_in", "acc", 0.5, 0.01, 0.5 * rec, 0.01, rec, 0.01, passed)
        report = EvalReport(base_model="base", artifact=str(folder), limit=None, gate=Gate(0.96), tasks=[task],
                            perplexity=None, generative=None, lm_eval_version="not used")
        write_report(report, folder)
        return report
    return validate


def test_sensitivity_is_a_kl_per_unit_and_candidate(tiny):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    torch.manual_seed(0)
    samples = [torch.randint(3, 1000, (24,)) for _ in range(2)]
    data = S.measure(hf, samples, ("int4-g128", "int4-g32", "int8", "bf16"))
    assert len(data["units"]) == 2 * 4 and data["tokens"] == 48
    for unit, kl in data["units"].items():
        assert kl["bf16"] == 0.0
        assert kl["int8"] < kl["int4-g32"] <= kl["int4-g128"] * 1.5, unit
        assert kl["int4-g128"] > 0
    # the model's weights are back as they were
    again = S.measure(hf, samples, ("int8",))
    assert again["units"]["model.layers.0.mlp.down_proj"]["int8"] == data["units"]["model.layers.0.mlp.down_proj"]["int8"]


def test_fisher_estimate_orders_layers_and_candidates_as_the_measured_kl(tiny):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    torch.manual_seed(1)
    samples = [torch.randint(3, 1000, (32,)) for _ in range(4)]
    cands = ("int4-g128", "int4-g32", "int8", "bf16")
    measured = S.measure(hf, samples, cands)["units"]
    estimated = S.estimate(hf, samples, cands)["units"]
    assert estimated.keys() == measured.keys() and all(p.grad is None for p in hf.parameters())
    pairs = [(measured[u][c], estimated[u][c]) for u in measured for c in cands if c != "bf16"]
    # Spearman rank correlation over every (unit, candidate)
    rank = lambda xs: {x: i for i, x in enumerate(sorted(xs))}  # noqa: E731
    rm, re_ = rank([m for m, _ in pairs]), rank([e for _, e in pairs])
    n = len(pairs)
    rho = 1 - 6 * sum((rm[m] - re_[e]) ** 2 for m, e in pairs) / (n * (n * n - 1))
    assert rho > 0.8, rho
    # and the size, within a factor of 3 on the sensitive end (second order is exact as the error goes to 0)
    m, e = max(pairs)
    assert m / 3 < e < 3 * m


def test_greedy_path_adds_bytes_and_removes_kl():
    sens = {"a": {"int4-g128": 1.0, "int8": 0.1, "bf16": 0.0}, "b": {"int4-g128": 0.01, "int8": 0.001, "bf16": 0.0}}
    shapes = {"a": [[64, 128]], "b": [[64, 128]]}
    path = greedy_path(sens, shapes)
    assert path[0].choice == {"a": "int4-g128", "b": "int4-g128"}
    assert path[1].choice["a"] == "int8"  # the sensitive unit is upgraded first
    assert all(p.bits_per_weight < q.bits_per_weight for p, q in zip(path, path[1:]))
    assert all(p.predicted_kl > q.predicted_kl for p, q in zip(path, path[1:]))
    assert path[-1].predicted_kl == 0.0
    assert all(p.bits_per_weight <= 6.0 for p in levels(path, 6.0))
    assert levels(path, 4.0) == []


def test_auto_writes_the_smallest_passing_point_and_reuses_sensitivity(tiny, home, tmp_path):
    calls = []
    out = tmp_path / "art"
    result = quantize_auto(str(tiny), recipe(budget=None), out, gate_from(6.0, calls), device="cpu")
    m = manifest.read(out)
    manifest.verify(out)
    assert m["bits_per_weight"] >= 6.0 and result.chosen["passed"]
    # binary search: every failing point tried is smaller, every passing one is at least as large
    assert all(b < 6.0 for b in calls if b < m["bits_per_weight"])
    assert m["bits_per_weight"] == min(b for b in calls if b >= 6.0)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert len(qc["config_groups"]) >= 2 or qc["ignore"] != ["lm_head"]
    assert (out / S.FILE).is_file() and m["sensitivity"]["file"] == S.FILE
    assert "<svg" in (out / "eval" / "pareto.svg").read_text()
    report = (out / "eval" / "report.md").read_text()
    assert "(chosen)" in report and "| layer |" in report
    assert "Per-layer choice" in (out / "README.md").read_text()
    assert [p for p in m["auto"]["points"] if p.get("chosen")][0]["bits_per_weight"] == m["bits_per_weight"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the trials are gone
    # a second run finds the sensitivities in the cache
    again = quantize_auto(str(tiny), recipe(budget=None), tmp_path / "art2", gate_from(6.0, []), device="cpu")
    assert again.sensitivity_reused and not result.sensitivity_reused


def test_an_unreachable_target_writes_nothing_and_names_the_best_point(tiny, home, tmp_path):
    calls = []
    out = tmp_path / "outs" / "art"
    with pytest.raises(GateNotReached, match=r"not reached within 5.0 bits per weight: best point [\d.]+ bits") as e:
        quantize_auto(str(tiny), recipe(budget=5.0, target=1.0), out, gate_from(99, calls), device="cpu")
    assert e.value.exit_code == 1 and "no artifact written" in str(e.value)
    assert list(out.parent.iterdir()) == []
    # the best point is the one with the highest recovery the stand-in gave (0.9 + 0.01 x bits: the largest tried)
    best = max(calls)
    assert f"best point {best:.3f} bits per weight, min task recovery {round(0.9 + 0.01 * best, 4)} (gate 1.0)" \
        in str(e.value)
    assert f"after {len(calls)} validated points" in str(e.value) and len(calls) >= 2


def test_a_target_above_the_gate_is_not_passed_by_the_gate_alone(tiny, home, tmp_path):
    # every point passes the validator's own gate, none within 5 bits reaches 100 % recovery (the stand-in gives
    # 0.9 + 0.01 x bits): no artifact claims to pass
    calls = []
    out = tmp_path / "outs" / "art"
    with pytest.raises(GateNotReached, match=r"target 1 not reached within 5.0 bits per weight: best point") as e:
        quantize_auto(str(tiny), recipe(budget=5.0, target=1.0), out, gate_from(0, calls), device="cpu")
    assert f"min task recovery {round(0.9 + 0.01 * max(calls), 4)} (gate 1.0)" in str(e.value)
    assert list(out.parent.iterdir()) == []
    # a target the points reach: the smallest of those is written, and its manifest records the target as its gate
    calls = []
    result = quantize_auto(str(tiny), recipe(budget=None, target=0.96), out, gate_from(0, calls), device="cpu")
    m = manifest.read(out)
    assert 0.9 + 0.01 * m["bits_per_weight"] >= 0.96 and result.chosen["gate"] == 0.96
    assert all(0.9 + 0.01 * b < 0.96 for b in calls if b < m["bits_per_weight"])
    assert m["gate"]["min_recovery"] == 0.96


def test_a_cancel_during_the_last_validation_writes_nothing(tiny, home, tmp_path):
    from kvant.artifact.progress import CancelToken, Cancelled

    cancel = CancelToken()
    seen = []

    def validate_then_cancel(folder):
        seen.append(folder)
        report = gate_from(0, [])(folder)  # passes: without the cancel, this point would be written
        cancel.cancel()
        return report

    out = tmp_path / "outs" / "art"
    with pytest.raises(Cancelled, match="auto quantization cancelled"):
        quantize_auto(str(tiny), recipe(budget=None), out, validate_then_cancel, device="cpu", cancel=cancel,
                      max_trials=1)
    assert len(seen) == 1 and list(out.parent.iterdir()) == []


def test_an_interrupted_run_leaves_no_artifact(tiny, home, tmp_path):
    seen = []

    def interrupted(folder):
        seen.append(manifest.read(folder)["bits_per_weight"])  # a complete trial artifact exists at this moment
        raise KeyboardInterrupt

    out = tmp_path / "outs" / "art"
    with pytest.raises(KeyboardInterrupt):
        quantize_auto(str(tiny), recipe(), out, interrupted, device="cpu")
    assert len(seen) == 1 and list(out.parent.iterdir()) == []


def test_an_interrupted_run_keeps_the_artifact_it_was_to_replace(tiny, home, tmp_path):
    out = tmp_path / "outs" / "art"
    quantize_auto(str(tiny), recipe(budget=None), out, gate_from(6.0, []), device="cpu")
    before = manifest.read(out)

    def interrupted(folder):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_auto(str(tiny), recipe(budget=None), out, interrupted, device="cpu", force=True)
    assert [p.name for p in out.parent.iterdir()] == ["art"]  # no trial folder left beside it
    manifest.verify(out)
    assert manifest.read(out) == before


@pytest.mark.parametrize("argv,message", [
    (["--recipe", "auto", "--target", "1.5"], "target must be a recovery in (0, 1], got 1.5"),
    (["--recipe", "auto", "--budget", "3"], "budget must be average bits per weight in [4, 16], got 3"),
    (["--recipe", "w4a16-gptq", "--budget", "6"], "--target and --budget apply to auto recipes"),
])
def test_cli_refuses_bad_auto_arguments_in_one_line(tiny, tmp_path, capsys, argv, message):
    from kvant.tui.cli import main

    assert main(["quantize", str(tiny), "--out", str(tmp_path / "art"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("gate,code,last_line", [
    ("passes", 1, "error: target 1 not reached within 5.0 bits per weight: best point"),  # 100 % at <= 5 bits
    ("interrupts", 130, "interrupted"),  # Ctrl-C while a point is validated
])
def test_cli_unreachable_or_interrupted_auto_run_writes_nothing(tiny, home, tmp_path, monkeypatch, capsys,
                                                                gate, code, last_line):
    from kvant.tui import cli
    from kvant.tui.commands import quantize as command

    calls = []

    def interrupt(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "auto_validator",
                        lambda *a: gate_from(0, calls) if gate == "passes" else interrupt)
    out = tmp_path / "outs" / "art"
    argv = ["quantize", str(tiny), "--recipe", "auto", "--target", "1.0", "--budget", "5", "--num-samples", "4",
            "--seq-len", "32", "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(last_line)
    if gate == "passes":
        assert f"best point {max(calls):.3f} bits per weight" in err[-1]
    assert list(out.parent.iterdir()) == []

