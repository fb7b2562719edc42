"""bench/w1_gemm_model.py's arithmetic on made-up sweep rows, every number worked out by hand."""
import importlib.util
import json
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[2] / "bench" / "w1_gemm_model.py"
_spec = importlib.util.spec_from_file_location("w1_gemm_model", _path)
model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(model)


def _row(shape, m, fmt, us, config=None, k=1024, n=512):
    return {"shape": shape, "k": k, "n": n, "m": m, "format": fmt, "config": config, "us": us}


def test_time_between_measured_rows_interpolated_or_padded_up():
    curve = {16: 10.0, 64: 40.0, 256: 100.0}
    assert model.at(curve, 1, "interp") == model.at(curve, 1, "ceil") == 10.0  # below the smallest: its time
    assert model.at(curve, 40, "interp") == pytest.approx(25.0)  # 10 + 30 * 24 / 48
    assert model.at(curve, 40, "ceil") == 40.0
    assert model.at(curve, 64, "interp") == model.at(curve, 64, "ceil") == 40.0
    assert model.at(curve, 160, "interp") == pytest.approx(70.0)
    assert model.at(curve, 512, "ceil") == 200.0  # past the largest: proportional


def test_tiles_arm_takes_a_wgmma_config_only_where_it_beats_the_dispatch_by_3_percent(tmp_path):
    rows = [_row("a", 64, "bf16 cuBLAS", 50.0), _row("a", 64, "dispatch", 40.0),
            _row("a", 64, "wgmma", 39.0, [1]),  # 2.5 % faster: not taken
            _row("a", 256, "bf16 cuBLAS", 100.0), _row("a", 256, "dispatch", 150.0),
            _row("a", 256, "wgmma", 130.0, [1]), _row("a", 256, "wgmma_ws", 110.0, [2]),
            _row("a", 256, "wgmma_ws", None, [3])]  # a failed candidate (no time) is skipped
    first, later = tmp_path / "1.json", tmp_path / "2.json"
    first.write_text(json.dumps({"rows": rows}))
    later.write_text(json.dumps({"rows": [_row("a", 256, "wgmma_ws", 120.0, [2])]}))  # replaces the 110
    arms = model.arms(model.load([first]))
    assert arms == {"bf16": {"a": {64: 50.0, 256: 100.0}}, "dispatch": {"a": {64: 40.0, 256: 150.0}},
                    "tiles": {"a": {64: 40.0, 256: 110.0}}}
    assert model.arms(model.load([first, later]))["tiles"]["a"][256] == 120.0


def test_w1_decode_rows_follow_the_workload():
    rows = model.decode_rows()
    # all 256 requests decode at the first step; the longest output (1,024 tokens) sets 1,023 steps; every output
    # token but each request's first (from the prefill) is a decode row: 133,966 - 256
    assert rows[0] == 256 and len(rows) == 1023 and sum(rows) == 133966 - 256
    assert rows == sorted(rows, reverse=True) and rows[-1] == 1


def test_int4_roofline_arm():
    # K 1024, N 512, 64 rows: weights 262,144 B + bf16 g128 scales 8,192 B + x and out 2 x 64 x 1,536 = 196,608 B
    # = 466,944 B at 1 GB/s = 466.944 µs, against 2 x 64 x 512 x 1024 = 67,108,864 FLOPs at 1 TFLOP/s = 67.1 µs;
    # at 1 GFLOP/s the FLOPs bound it: 67,108.864 µs
    rows = [_row("a", 64, "bf16 cuBLAS", 50.0), _row("a", 64, "dispatch", 40.0)]
    assert model.arms(rows, roofline=(1e9, 1e12))["int4 roofline"]["a"][64] == pytest.approx(466.944)
    assert model.arms(rows, roofline=(1e9, 1e9))["int4 roofline"]["a"][64] == pytest.approx(67108.864)
    assert "int4 roofline" not in model.arms(rows)
