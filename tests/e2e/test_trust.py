"""Issue 22 on a real artifact of the default model (INT8 weight-only, data-free: seconds to write), through the CLI in
subprocesses with the network off (tests/tui/netoff) and no data folder unless a test passes one:
- a copy with flipped bytes in its weights is refused by serve, eval, push and `LLM()` with exit code 4 and the file's
  name, while the untouched original passes the same checks;
- after `kvant eval` (offline, with local tasks, or failing) the manifest's hashes still match the weights on disk;
- every file and folder of an artifact gets the user's umask, even from a base model whose files are 0600."""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kvant.artifact import manifest as M

GUARD = Path(__file__).resolve().parents[1] / "tui" / "netoff"
INTEGRITY, NO_NETWORK = 4, 3  # README's exit-code table
WEIGHTS = "model.safetensors"


def kvant(*args: str, home: Path, umask: int = 0o022, data: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KVANT_EVAL_DATA", "HF_HUB_OFFLINE")}
    env.update(PYTHONPATH=str(GUARD), KVANT_HOME=str(home), OMP_NUM_THREADS="1", PIP_RETRIES="0")
    return subprocess.run([sys.executable, "-P", "-m", "kvant.tui.cli", *args], capture_output=True, text=True,
                          env=env, timeout=900, preexec_fn=lambda: os.umask(umask))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_middle(path: Path, count: int = 16) -> None:
    # bytes inside the tensor data, past the safetensors header: the file still parses, only its hash tells
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        data = f.read(count)
        f.seek(path.stat().st_size // 2)
        f.write(bytes(b ^ 0xFF for b in data))


def base_copy(default_model: Path, folder: Path) -> Path:
    # the default model as a user's folder whose files are owner-only (as safetensors writes them)
    shutil.copytree(default_model, folder)
    for p in folder.iterdir():
        p.chmod(0o600)
    return folder


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kvant-home")


@pytest.fixture(scope="module")
def artifact(default_model, tmp_path_factory, home) -> Path:
    root = tmp_path_factory.mktemp("trust")
    out = root / "art"
    proc = kvant("quantize", str(default_model), "--recipe", "w8a16-int8", "--out", str(out), home=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def assert_integrity_failure(proc: subprocess.CompletedProcess, path: Path) -> None:
    shown = f"exit {proc.returncode}\nstdout: {proc.stdout[-1500:]}\nstderr: {proc.stderr[-1500:]}"
    assert proc.returncode == INTEGRITY, shown
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(path) in last and "sha256" in last, shown
    assert "Traceback" not in proc.stderr, shown


@pytest.mark.parametrize("command", [("serve", "{art}", "--port", "0", "--device", "cpu"),
                                     ("eval", "{art}"),
                                     ("eval", "{art}", "--tasks", "kvant_arc_easy", "--data-dir", "{data}"),
                                     ("push", "{art}", "someone/model", "--dry-run")],
                         ids=["serve", "eval offline", "eval with data", "push"])
def test_a_flipped_copy_is_refused_with_exit_4_naming_the_file(artifact, home, shared_data, tmp_path, command):
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    flip_middle(copy / WEIGHTS)
    proc = kvant(*(c.format(art=copy, data=shared_data) for c in command), home=home)
    assert_integrity_failure(proc, copy / WEIGHTS)
    assert not (copy / "eval").exists() and M.read(copy)["files"] == M.read(artifact)["files"]


def test_llm_refuses_a_flipped_copy_and_loads_the_original(artifact, tmp_path, monkeypatch):
    from kvant.artifact.errors import IntegrityError
    from kvant.engine import LLM, SamplingParams

    monkeypatch.setenv("KVANT_HOME", str(tmp_path / "home"))  # no verified-once record from other tests
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    flip_middle(copy / WEIGHTS)
    with pytest.raises(IntegrityError) as info:
        LLM(str(copy), device="cpu", max_model_len=256, num_kv_blocks=16)
    assert info.value.exit_code == INTEGRITY and str(copy / WEIGHTS) in str(info.value)
    llm = LLM(str(artifact), device="cpu", max_model_len=256, num_kv_blocks=16)
    out = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=4))
    assert len(out[0].outputs[0].token_ids) == 4


def test_push_accepts_the_untouched_original(artifact, home):
    proc = kvant("push", str(artifact), "someone/model", "--dry-run", home=home)
    assert proc.returncode == 0 and "dry run: nothing uploaded" in proc.stdout, proc.stderr[-2000:]


def _weights_hashes(art: Path) -> dict[str, str]:
    return {k: v for k, v in M.read(art)["files"].items() if not k.startswith("eval/")}


def assert_hashes_match_the_weights(art: Path, before: dict[str, str]) -> None:
    files = M.read(art)["files"]
    assert _weights_hashes(art) == before  # eval re-blessed nothing it did not write
    for rel, expected in files.items():  # and every hash listed is the file's own
        assert sha256(art / rel) == expected, rel
    M.verify(art)


def test_kvant_eval_keeps_the_manifest_hashes_of_the_weights(artifact, home, shared_data, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    before = _weights_hashes(art)
    original = {rel: sha256(art / rel) for rel in before}
    assert before == original

    # no data folder, no network: the offline checks (held-out perplexity, generative agreement)
    proc = kvant("eval", str(art), home=home)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert (art / "eval" / "results.json").is_file() and "eval/results.json" in M.read(art)["files"]
    assert_hashes_match_the_weights(art, before)

    # local lm-eval tasks over the first results
    proc = kvant("eval", str(art), "--tasks", "kvant_arc_easy", "--data-dir", str(shared_data), "--limit", "4",
                 "--no-generative", home=home)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert json.loads((art / "eval" / "results.json").read_text())["limit"] == 4
    assert_hashes_match_the_weights(art, before)

    # an eval that fails (a local task without its data folder) leaves kvant.json as it was
    manifest_bytes = (art / "kvant.json").read_bytes()
    proc = kvant("eval", str(art), "--tasks", "kvant_arc_easy", home=home)
    assert proc.returncode == NO_NETWORK and proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr
    assert (art / "kvant.json").read_bytes() == manifest_bytes
    assert_hashes_match_the_weights(art, before)


def modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


@pytest.mark.parametrize("umask", [0o027, 0o077], ids=["027", "077 (owner-only, asked for)"])
def test_artifact_files_get_the_users_umask(default_model, home, shared_data, tmp_path, umask):
    # quantize from a base whose files are 0600 (copied files must not keep that mode), then write eval/ into it
    base = base_copy(default_model, tmp_path / "base")
    out = tmp_path / "art"
    proc = kvant("quantize", str(base), "--recipe", "w8a16-int8", "--out", str(out), home=home, umask=umask)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = kvant("eval", str(out), "--tasks", "kvant_arc_easy", "--data-dir", str(shared_data), "--limit", "2",
                 "--no-generative", home=home, umask=umask)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    found = modes(out)
    assert "eval/results.json" in found and WEIGHTS in found and "tokenizer.json" in found
    wanted = {rel: (0o777 if (out / rel).is_dir() else 0o666) & ~umask for rel in found}
    assert found == wanted
