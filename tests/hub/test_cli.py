import pytest

from kvant.tui.cli import main

REPO_ID = "kvant-test/smol-w4a16"


@pytest.fixture
def cli_hub(hub, monkeypatch):
    import huggingface_hub.constants as C

    # the CLI has no --endpoint: it uses the client's default, as a user's HF_ENDPOINT would set it
    monkeypatch.setattr(C, "ENDPOINT", hub.url)
    return hub


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["push", "--help"])
    out = capsys.readouterr().out
    for flag in ("--private", "--revision", "--commit-message", "--dry-run", "--force"):
        assert flag in out


def test_dry_run_prints_card_and_files(cli_hub, make_artifact, capsys):
    art = make_artifact()
    assert main(["push", str(art), REPO_ID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("---\n") and "base_model_relation: quantized" in out
    assert "model.safetensors" in out and "1.0 MiB" in out and "dry run: nothing uploaded" in out
    assert cli_hub.requests == []


def test_push_then_noop(cli_hub, make_artifact, token, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", token)
    art = make_artifact()
    assert main(["push", str(art), REPO_ID, "--commit-message", "w4a16 from the CLI"]) == 0
    out = capsys.readouterr().out
    num_files = sum(1 for p in art.rglob("*") if p.is_file())
    assert f"uploaded {num_files} file(s) to {cli_hub.url}/{REPO_ID} (main)" in out
    assert len(cli_hub.commits) == 1
    assert main(["push", str(art), REPO_ID]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert len(cli_hub.commits) == 1


def test_wrong_token_is_one_line(cli_hub, make_artifact, token, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_right_one")
    assert main(["push", str(make_artifact()), REPO_ID]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == f"error: authentication failed for {cli_hub.url}: check HF_TOKEN"
    assert "Traceback" not in captured.err and "hf_not_the_right_one" not in captured.out + captured.err


def test_failed_gate_exit_code_and_force(cli_hub, make_artifact, token, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", token)
    art = make_artifact(passed=False)
    assert main(["push", str(art), REPO_ID]) == 2
    assert "failed its eval gate" in capsys.readouterr().err
    assert main(["push", str(art), REPO_ID, "--force"]) == 0
    assert "failed its eval gate (--force)" in capsys.readouterr().out
