"""`kvant demo` end to end on the default model (with the local data folder, then offline on the same artifact), its
held-out text, its perplexity, and its argument errors."""
import json
import re
import socket
from pathlib import Path

import pytest

from kvant.tui.cli import main
from kvant.tui.commands import demo

# INT4 GPTQ of the first two decoder layers only: the whole pipeline stays test-sized (quantizing all 30 layers takes
# one to two minutes on two CPU cores by itself)
TINY_RECIPE = """\
description: INT4 GPTQ, group 64, of the first two decoder layers (test-sized)
scheme: W4A16
group_size: 64
targets: ["re:model\\\\.layers\\\\.[01]\\\\."]
ignore: [lm_head]
algorithm: gptq
calibration:
  dataset: builtin
  num_samples: 4
  seq_len: 64
"""


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
def test_demo_with_data_then_offline_reuse(default_model, shared_data, tmp_path, capsys, one_thread, monkeypatch):
    from kvant.artifact import manifest

    monkeypatch.delenv(demo.DATA_ENV, raising=False)
    monkeypatch.setattr(demo, "GENERATIVE_TOKENS", 8)  # the check's shape, not its statistics, is under test here
    recipe = tmp_path / "tiny-int4.yaml"
    recipe.write_text(TINY_RECIPE)
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
    assert results["tasks"] == [] and results["perplexity"]["task"] == demo.HELDOUT_TASK
    ppl = results["perplexity"]
    assert ppl["base"] > 1 and ppl["quant"] > 1 and ppl["ratio"] == pytest.approx(ppl["quant"] / ppl["base"])
    assert f"base {ppl['base']:.3f}, quantized {ppl['quant']:.3f}" in rows[demo.HELDOUT_TASK]
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


def _token_ngrams(ids: list[int], n: int) -> set[tuple[int, ...]]:
    return {tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)}


@pytest.mark.parametrize("num_samples, seq_len", [(8, 128), (32, 512)])
def test_heldout_paragraphs_share_no_text_with_calibration(default_model, num_samples, seq_len):
    from transformers import AutoTokenizer

    from kvant.quantize.calibration_data import load_calibration
    from kvant.quantize.recipe import load_recipe

    tok = AutoTokenizer.from_pretrained(default_model)
    recipe = load_recipe("w4a16-gptq-g64").with_calibration(num_samples=num_samples, seq_len=seq_len)
    calib = load_calibration(recipe.calibration, tok)
    manifest = {"recipe": recipe.to_dict(), "calibration": {"sha256": calib.sha256}}
    texts = demo.heldout_texts(tok, manifest)
    assert len(texts) == demo.NUM_HELDOUT == len(set(texts))
    # independent of how heldout_texts decides: no 8-token run of a held-out paragraph is in any calibration sample
    seen = set().union(*(_token_ngrams(s.tolist(), 8) for s in calib.input_ids))
    for t in texts:
        assert not _token_ngrams(tok.encode(t, add_special_tokens=False), 8) & seen
    # and the check is not vacuous: the paragraph at the start of each calibration sample is never held out
    builtin = demo._read_builtin()
    firsts = {p for p in builtin for s in calib.input_ids
              if tok.decode(s.tolist(), skip_special_tokens=True).startswith(p[:80])}
    assert firsts and not firsts & set(texts)


def test_heldout_needs_the_artifacts_own_calibration(default_model):
    from transformers import AutoTokenizer

    from kvant.artifact.errors import KvantError
    from kvant.quantize.recipe import load_recipe

    tok = AutoTokenizer.from_pretrained(default_model)
    recipe = load_recipe("w4a16-gptq-g64").with_calibration(num_samples=4, seq_len=64)
    with pytest.raises(KvantError, match="sha256"):
        demo.heldout_texts(tok, {"recipe": recipe.to_dict(), "calibration": {"sha256": "0" * 64}})


@pytest.mark.slow
def test_word_perplexity_matches_transformers(default_model):
    import math

    import torch
    from transformers import AutoModelForCausalLM

    from kvant.engine import LLM

    texts = demo._read_builtin()[:2]
    llm = LLM(str(default_model), dtype="float32", device="cpu", max_model_len=1024)
    ours = demo.word_perplexity(llm, texts)
    hf = AutoModelForCausalLM.from_pretrained(default_model, dtype=torch.float32).eval()
    tok = llm.tokenizer
    total = 0.0
    for t in texts:
        ids = torch.tensor([[tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
                            + tok.encode(t, add_special_tokens=False)])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0, :-1].float(), dim=-1)
        total += float(logp.gather(1, ids[0, 1:, None]).sum())
    expected = math.exp(-total / sum(len(t.split()) for t in texts))
    assert ours == pytest.approx(expected, rel=1e-3)


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
