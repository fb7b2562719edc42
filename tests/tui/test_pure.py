import json
import threading

import pytest

from kvant.tui.screens.chat import parse_settings
from kvant.tui.screens.quantize import default_out
from kvant.tui.screens.serve import tokens_per_s
from kvant.artifact.errors import KvantError
from kvant.artifact.progress import CancelToken, Cancelled, fraction
from kvant.tui.services import (parse_metrics, parse_results, recipe_info,
                                stats_from_metrics)
from kvant.tui.widgets.kv_usage_bar import usage_bar
from kvant.tui.widgets.progress_panel import eta_seconds, format_duration
from kvant.tui.widgets.recovery_bars import recovery_bar

METRICS = """\
# HELP kvant:num_requests_running Number of requests in the running batch.
# TYPE kvant:num_requests_running gauge
kvant:num_requests_running{model_name="m"} 3
kvant:num_requests_waiting{model_name="m"} 2
kvant:kv_cache_usage_perc{model_name="m"} 0.125
kvant:prefix_cache_queries_total{model_name="m"} 200
kvant:prefix_cache_hits_total{model_name="m"} 50
kvant:generation_tokens_total{model_name="m"} 1234
kvant:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 4
kvant:time_to_first_token_seconds_sum{model_name="m"} 0.6
kvant:time_to_first_token_seconds_count{model_name="m"} 4
kvant:time_per_output_token_seconds_sum{model_name="m"} 2.0
kvant:time_per_output_token_seconds_count{model_name="m"} 400
"""


def test_metrics_to_stats():
    stats = stats_from_metrics(parse_metrics(METRICS))
    assert (stats.num_running, stats.num_waiting) == (3, 2)
    assert stats.kv_cache_usage == pytest.approx(0.125)
    assert stats.prefix_cache_hit_rate == pytest.approx(50 / 200)
    assert stats.generation_tokens_total == 1234
    assert stats.ttft_s == pytest.approx(0.6 / 4)
    assert stats.tpot_s == pytest.approx(2.0 / 400)


def test_metrics_sum_labelled_samples_and_skip_comments():
    values = parse_metrics("# c\nx{a=\"1\"} 2\nx{a=\"2\"} 3.5\ny 1e3\n")
    assert values == {"x": 5.5, "y": 1000.0}


def test_results_json_parses_per_architecture_schema():
    data = {"format": 1, "created": "2026-11-23T00:00:00Z", "lm_eval_version": "0.4.13", "limit": 10,
            "base_model": "b", "artifact": "a", "gate": {"min_recovery": 0.96},
            "tasks": [{"task": "arc_easy", "metric": "acc", "base": 0.5, "base_stderr": 0.02, "quant": 0.45,
                       "quant_stderr": 0.02, "recovery": 0.9, "recovery_stderr": 0.05, "passed": False}],
            "perplexity": {"task": "wikitext", "base": 20.0, "quant": 21.0, "ratio": 1.05}, "generative": None,
            "passed": False}
    summary = parse_results(json.loads(json.dumps(data)))
    assert summary.min_recovery == 0.96 and summary.limit == 10 and not summary.passed
    assert summary.perplexity_ratio == 1.05
    [row] = summary.rows
    assert (row.task, row.base, row.quant, row.recovery, row.passed) == ("arc_easy", 0.5, 0.45, 0.9, False)


def test_recipe_info_from_a_recipe_file(tmp_path):
    gptq = tmp_path / "my-int4.yaml"
    gptq.write_text("scheme: W4A16\ndescription: INT4  GPTQ\nalgorithm: gptq\n"
                    "calibration:\n  dataset: synthetic\n  num_samples: 64\n")
    rtn = tmp_path / "my-fp8.yaml"
    rtn.write_text("scheme: FP8_DYNAMIC\n")
    info = recipe_info(gptq)
    assert (info.name, info.scheme, info.calibration_source, info.num_samples, info.description) == (
        "my-int4", "W4A16", "synthetic", 64, "INT4 GPTQ")
    plain = recipe_info(rtn)  # round-to-nearest of weights with dynamic activations needs no calibration data
    assert (plain.scheme, plain.calibration_source, plain.num_samples) == ("FP8_DYNAMIC", "none", None)


@pytest.mark.parametrize("recovery,gate,width,filled", [(1.0, 0.96, 20, 20), (0.9, 0.96, 20, 10), (0.7, 0.96, 20, 0)])
def test_recovery_bar_cells(recovery, gate, width, filled):
    text = recovery_bar(recovery, gate, width).plain
    assert len(text) == width
    gate_at = round((gate - 0.8) / 0.2 * width)
    assert text[gate_at] == "│"
    assert sum(1 for i, c in enumerate(text) if c == "█") == filled - (1 if gate_at < filled else 0)


def test_usage_bar():
    assert usage_bar(0.25, 20).plain == "KV cache " + "█" * 5 + "░" * 15 + " 25.0%"


def test_eta_and_duration():
    assert eta_seconds(30.0, 0.25) == pytest.approx(90.0)
    assert eta_seconds(30.0, None) is None and eta_seconds(30.0, 1.0) is None
    assert format_duration(125) == "02:05" and format_duration(None) == "--:--"
    assert format_duration(3 * 3600 + 120) == "3h02m"


def test_tokens_per_s():
    assert tokens_per_s(None, 5.0, 100.0) == 0.0
    assert tokens_per_s((1.0, 100.0), 3.0, 180.0) == pytest.approx(40.0)


def test_parse_settings():
    assert parse_settings("0", "16") == (0.0, 16)
    for temp, tokens, field in [("3", "16", "temperature"), ("0.5", "0", "max tokens"), ("x", "1", "temperature")]:
        with pytest.raises(ValueError, match=field):
            parse_settings(temp, tokens)


def test_default_out(tmp_path):
    assert default_out(tmp_path, "smollm2-135m", "w4a16-gptq") == tmp_path / "smollm2-135m-w4a16-gptq"
    assert default_out(tmp_path, "/m/My Model", "fp8") == tmp_path / "my-model-fp8"


def test_worker_event_backs_the_cancel_token():
    # a Textual worker's cancelled_event is a threading.Event: cancelling the worker cancels the core job
    event = threading.Event()
    token = CancelToken(event)
    token.raise_if_cancelled("quantization")  # not cancelled: returns
    assert not token.cancelled and not token.wait(0.01)
    event.set()
    assert token.cancelled and token.wait(0.01)
    with pytest.raises(Cancelled, match="^quantization cancelled$"):
        token.raise_if_cancelled("quantization")
    assert issubclass(Cancelled, KvantError)  # the CLI prints it on one line
    assert (fraction(1, 4), fraction(3, 0)) == (0.25, None)


def test_pareto_plot_from_an_auto_manifest():
    from kvant.tui.services import parse_pareto
    from kvant.tui.widgets.pareto_plot import CHOSEN, FAIL, GATE, PASS, pareto_text

    assert parse_pareto({"scheme": "w4a16"}) is None  # one scheme, no search: no plot
    points = [{"bits_per_weight": b, "quality": q, "passed": q >= 0.8, "gate": 0.8,
               "quality_name": "generative perplexity base / quantized"} for b, q in ((4.5, 0.6), (6.0, 0.9), (8.0, 1.0))]
    points[1]["chosen"] = True
    pareto = parse_pareto({"auto": {"points": points}})
    assert [p.chosen for p in pareto.points] == [False, True, False] and pareto.gate == 0.8
    rows = str(pareto_text(pareto, width=8, height=5)).splitlines()[1:6]  # the plot's rows, top (quality 1.0) first
    cells = [r.split("┤", 1)[1] for r in rows]
    # y spans 0.6..1.0 over 5 rows (0.1 per row), x 4.5..8.0 over 8 columns (0.5 bits per column)
    assert cells[0][7] == PASS and cells[1][3] == CHOSEN and cells[4][0] == FAIL
    assert cells[2] == GATE * 8 and rows[2].lstrip().startswith("0.800")
    assert rows[0].lstrip().startswith("1.000") and rows[4].lstrip().startswith("0.600")
