import json
import math

import pytest

from kvant.eval.generative import GenerativeConfig, agreement, summarize
from kvant.artifact.gate import Gate, gate_for
from kvant.eval.report import build_report, format_markdown, recovery, write_report


def test_recovery_delta_method_by_hand():
    # b = 0.5 ± 0.02, q = 0.48 ± 0.03: r = 0.96; var = (0.03/0.5)^2 + (0.48*0.02/0.25)^2 = 0.0036 + 0.00147456
    r, se = recovery(0.5, 0.02, 0.48, 0.03)
    assert r == pytest.approx(0.96)
    assert se == pytest.approx(math.sqrt(0.0036 + 0.00147456))


def test_recovery_of_zero_base_is_undefined():
    assert recovery(0.0, 0.0, 0.1, 0.01) == (None, None)


@pytest.mark.parametrize("manifest, expected", [
    ({"scheme": "fp8-dynamic"}, 0.99), ({"scheme": "w8a8-int8"}, 0.98), ({"scheme": "w4a16"}, 0.96),
    ({"scheme": "w4a16", "gate": {"min_recovery": 0.9}}, 0.9), ({"scheme": "w8a16", "gate": {}}, 0.98),
])
def test_gate_defaults_and_manifest_override(manifest, expected):
    assert gate_for(manifest).min_recovery == expected


def test_gate_rejects_bad_values():
    with pytest.raises(ValueError, match="min_recovery"):
        Gate(1.5)
    with pytest.raises(ValueError, match="scheme"):
        gate_for({"scheme": "int3"})


def _results(acc_norm, acc, stderr, ppl):
    return {
        "kvant_arc_easy": {"alias": "arc", "acc,none": acc, "acc_stderr,none": stderr, "acc_norm,none": acc_norm,
                           "acc_norm_stderr,none": stderr},
        "kvant_winogrande": {"acc,none": acc, "acc_stderr,none": stderr},
        "kvant_wikitext": {"word_perplexity,none": ppl, "word_perplexity_stderr,none": "N/A"},
    }


def test_build_report_uses_primary_metrics_and_gates(tmp_path):
    base = _results(acc_norm=0.60, acc=0.50, stderr=0.01, ppl=20.0)
    quant = _results(acc_norm=0.594, acc=0.45, stderr=0.01, ppl=21.0)
    gen = summarize([[1, 2, 3, 4]], [[1, 2, 9, 4]], [(-4.0, 4)], [(-6.0, 4)], GenerativeConfig(max_ppl_ratio=1.25))
    report = build_report(base, quant, Gate(0.98), base_model="b", artifact="a", limit=10,
                          lm_eval_version="0.4.13", generative=gen)
    by_task = {t.task: t for t in report.tasks}
    arc, wino = by_task["kvant_arc_easy"], by_task["kvant_winogrande"]
    assert (arc.metric, wino.metric) == ("acc_norm", "acc")
    assert arc.recovery == pytest.approx(0.99) and arc.passed  # 0.594 / 0.60
    assert wino.recovery == pytest.approx(0.9) and not wino.passed  # 0.45 / 0.50
    assert report.perplexity.ratio == pytest.approx(1.05)
    # base perplexity of own text exp(1) vs of the artifact's exp(1.5): ratio exp(0.5) = 1.6487 > 1.25
    assert gen["ppl_ratio"] == pytest.approx(math.exp(0.5)) and not gen["passed"]
    assert gen["prefix_agreement"] == pytest.approx(0.5) and gen["token_agreement"] == pytest.approx(0.75)
    assert not report.passed

    results, md = write_report(report, tmp_path)
    data = json.loads(results.read_text())
    assert set(data) == {"format", "created", "lm_eval_version", "limit", "base_model", "artifact", "gate", "tasks",
                         "perplexity", "generative", "passed"}
    assert set(data["tasks"][0]) == {"task", "metric", "base", "base_stderr", "quant", "quant_stderr", "recovery",
                                     "recovery_stderr", "passed"}
    assert data["passed"] is False and data["gate"] == {"min_recovery": 0.98}
    assert "FAIL" in md.read_text() and "winogrande" in format_markdown(report)


def test_report_passes_when_every_task_and_generative_pass():
    base = _results(acc_norm=0.60, acc=0.50, stderr=0.01, ppl=20.0)
    report = build_report(base, base, Gate(0.99), base_model="b", artifact="a", limit=None,
                          lm_eval_version="0.4.13", generative=None)
    assert all(t.recovery == 1.0 for t in report.tasks) and report.passed


@pytest.mark.parametrize("base, quant, expected", [
    ([1, 2, 3], [1, 2, 3], (1.0, 1.0)),
    ([1, 2, 3, 4], [1, 5, 3, 4], (0.25, 0.75)),
    ([1, 2], [1, 2, 3, 4], (1.0, 0.5)),
    ([], [], (1.0, 1.0)),
])
def test_token_agreement(base, quant, expected):
    assert agreement(base, quant) == pytest.approx(expected)
