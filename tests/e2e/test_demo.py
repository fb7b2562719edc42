"""`kvant demo` end to end on the default model (with the local data folder, then offline on the same artifact), and
its argument errors (the offline check itself: tests/eval/test_offline.py)."""
import json
import re
import socket
from pathlib import Path

import pytest

from kvant.tui.cli import main
from kvant.eval import offline
from kvant.tui.commands import demo


def summary_rows(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells[1]
    return rows


def port_of(rows: dict[str, str]) -> int:
    m = re.search(r"http://127\.0\.0\.1:(\d+)/v1", rows["server ready"])
    assert m, rows["server ready"]
    return int(m.group(1))


def port_accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def one_thread():
    # two shared cores: with other processes busy, two OpenMP threads spin-waiting on each other make the int4
    # reference path (many small ops per step) tens of times slower than one thread
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_with_data_then_offline_reuse(default_model, shared_data, tiny_int4_recipe, tmp_path, capsys, one_thread,
                                           monkeypatch):
    from kvant.artifact import manifest

    monkeypatch.delenv(demo.DATA_ENV, raising=False)
    monkeypatch.setattr(demo, "GENERATIVE_TOKENS", 8)  # the check's shape, not its statistics, is under test here
    recipe = tiny_int4_recipe  # INT4 GPTQ of the first two decoder layers: the whole pipeline stays test-sized
    out = tmp_path / "artifact"
    common = ["demo", "--recipe", str(recipe), "--num-samples", "2", "--seq-len", "64", "--out", str(out),
              "--max-tokens", "12"]

    # first run: quantizes, validates on two local tasks, serves
    rc = main(common + ["--data-dir", str(shared_data), "--limit", "3"])
    captured = capsys.readouterr()
    rows = summary_rows(captured.out)
    manifest.verify(out)  # every file, eval/ included, matches kvant.json
    m = manifest.read(out)
    assert m["scheme"] == "w4a16" and m["calibration"]["num_samples"] == 2 and m["calibration"]["seq_len"] == 64
    assert "reusing" not in captured.err and not rows["quantize time"].startswith("reused")
    assert str(out) in rows["artifact"]
    assert "kvant_arc_easy" in rows["validation"] and str(shared_data) in rows["validation"]
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["limit"] == 3
    assert sorted(t["task"] for t in results["tasks"]) == ["kvant_arc_easy", "kvant_lambada_openai"]
    for t in results["tasks"]:
        name = t["task"].removeprefix("kvant_")
        assert f"base {t['base']:.4f}, quantized {t['quant']:.4f}" in rows[name]
    assert results["generative"]["num_prompts"] == 16
    assert results["generative"]["max_tokens"] == demo.GENERATIVE_TOKENS
    assert rows["gate"].startswith("PASS" if results["passed"] else "FAIL")
    # a failed gate is the run's exit code, said plainly after the summary
    assert rc == (0 if results["passed"] else 1)
    assert ("gate FAILED" in captured.err) == (not results["passed"])
    assert rows["question"] == "What is the capital of France?" and rows["answer"].strip()
    assert re.fullmatch(r"\d+ ms", rows["TTFT"])
    assert "port closed" in rows["server ready"] and not port_accepts(port_of(rows))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and "eval" not in p.relative_to(out).parts)
    assert f"{size / 2**20:.1f} MiB vs base" in rows["size"]

    # second run, no data folder: reuses the artifact and validates with what ships in the package
    rc = main(common)
    captured = capsys.readouterr()
    rows = summary_rows(captured.out)
    assert rc == (0 if json.loads((out / "eval" / "results.json").read_text())["passed"] else 1)
    assert f"reusing the artifact in {out}" in captured.err and rows["quantize time"].startswith("reused")
    manifest.verify(out)
    assert manifest.read(out)["created"] == m["created"]  # not quantized again
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["tasks"] == [] and results["perplexity"]["task"] == offline.HELDOUT_TASK
    ppl = results["perplexity"]
    assert ppl["base"] > 1 and ppl["quant"] > 1 and ppl["ratio"] == pytest.approx(ppl["quant"] / ppl["base"])
    assert f"base {ppl['base']:.3f}, quantized {ppl['quant']:.3f}" in rows[offline.HELDOUT_TASK]
    assert rows["validation"].startswith("offline") and "generative" in rows
    assert rows["answer"].strip() and not port_accepts(port_of(rows))


def test_an_artifact_of_another_recipe_is_not_reused(default_model, tmp_path):
    from kvant.artifact.errors import KvantError
    from kvant.quantize.recipe import load_recipe

    out = tmp_path / "artifact"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(KvantError, match="kvant.json"):
        demo.check_reusable(out, load_recipe("w4a16-gptq-g64"), default_model)


@pytest.mark.parametrize("argv, needle", [
    (["--recipe", "no-such-recipe"], "no-such-recipe"),
    (["--num-samples", "0"], "num_samples"),
    (["--limit", "0"], "limit"),
    (["--port", "70000"], "port"),
    (["--max-tokens", "0"], "max_tokens"),
    (["--tasks", "no_such_task", "--data-dir", "SHARED"], "no_such_task"),
    (["--data-dir", "/definitely/not/here"], "/definitely/not/here"),
])
def test_bad_arguments_fail_before_any_work(argv, needle, shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KVANT_HOME", str(tmp_path / "home"))  # a pull or quantize would write here
    argv = [str(shared_data) if a == "SHARED" else a for a in argv]
    out = tmp_path / "artifact"
    assert main(["demo", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not out.exists() and not (tmp_path / "home" / "models").exists()


def test_a_busy_port_is_a_clear_error(default_model, tmp_path, capsys):
    from kvant.artifact.errors import KvantError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(KvantError, match=f"port {port} on 127.0.0.1 is in use"):
            demo.serve_and_chat(default_model, port, demo.QUESTION, 4)
        # the command refuses it before any work
        assert main(["demo", "--port", str(port), "--out", str(tmp_path / "artifact")]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
    assert not (tmp_path / "artifact").exists()
