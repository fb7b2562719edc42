"""What push refuses, what a dry run shows, and where the token and the branch come from."""
import hashlib
import json
import logging

import pytest
from huggingface_hub import HfApi, ModelCard

from kvant.artifact.errors import KvantError
from kvant.quantize.hub import push

REPO_ID = "kvant-test/smol-w4a16"


def _snapshot(art):
    return {p.relative_to(art).as_posix(): p.read_bytes() for p in sorted(art.rglob("*")) if p.is_file()}


def test_modified_file_is_refused_naming_it(hub, make_artifact, token):
    art = make_artifact()
    with open(art / "model.safetensors", "r+b") as f:  # flip one byte of the weights
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(KvantError, match=r"model\.safetensors does not match its sha256 in kvant\.json"):
        push(art, REPO_ID, token=token, endpoint=hub.url)
    assert hub.requests == []


def test_unlisted_and_missing_files_are_refused(hub, make_artifact, token):
    art = make_artifact()
    (art / "notes.txt").write_text("scratch")
    with pytest.raises(KvantError, match=r"notes\.txt is not listed in kvant\.json"):
        push(art, REPO_ID, token=token, endpoint=hub.url)
    (art / "notes.txt").unlink()
    (art / "tokenizer.json").unlink()
    with pytest.raises(KvantError, match=r"tokenizer\.json is listed in kvant\.json but missing"):
        push(art, REPO_ID, token=token, endpoint=hub.url)
    assert hub.requests == []


def test_not_an_artifact(hub, tmp_path, token):
    (tmp_path / "plain").mkdir()
    with pytest.raises(KvantError, match="has no kvant.json"):
        push(tmp_path / "plain", REPO_ID, token=token, endpoint=hub.url)


def test_failed_gate_needs_force(hub, make_artifact, token):
    art = make_artifact(passed=False)
    before = _snapshot(art)
    with pytest.raises(KvantError, match=r"failed its eval gate \(hellaswag\); pass --force"):
        push(art, REPO_ID, token=token, endpoint=hub.url)
    assert hub.requests == [] and _snapshot(art) == before
    result = push(art, REPO_ID, token=token, endpoint=hub.url, force=True)
    assert result.gate_passed is False and result.commit_oid is not None
    card = (art / "README.md").read_text()
    assert "| hellaswag | acc_norm |" in card and "| FAIL |" in card and "**FAILED**" in card


def test_dry_run_uploads_and_writes_nothing(hub, make_artifact, token):
    art = make_artifact()
    before = _snapshot(art)
    result = push(art, REPO_ID, token=token, endpoint=hub.url, dry_run=True)
    assert hub.requests == [] and _snapshot(art) == before
    assert result.dry_run and result.commit_oid is None and result.uploaded == ()
    sizes = dict(result.files)
    assert set(sizes) == set(before)
    assert sizes["README.md"] == len(result.card.encode())
    assert all(sizes[p] == len(before[p]) for p in before if p != "README.md")
    # the real push writes exactly the card the dry run showed
    push(art, REPO_ID, token=token, endpoint=hub.url)
    assert (art / "README.md").read_text() == result.card


def test_not_evaluated_is_allowed_and_said(hub, make_artifact, token, caplog):
    art = make_artifact(evaluated=False)
    with caplog.at_level(logging.WARNING, logger="kvant"):
        result = push(art, REPO_ID, token=token, endpoint=hub.url)
    assert not result.evaluated and result.gate_passed is None
    assert "card will say 'not evaluated'" in caplog.text
    card = ModelCard((art / "README.md").read_text())
    assert card.data.eval_results is None and "**Not evaluated.**" in card.text


def test_token_from_environment_and_missing_token(hub, make_artifact, token, monkeypatch):
    art = make_artifact()
    with pytest.raises(KvantError, match="no Hugging Face token: set HF_TOKEN"):
        push(art, REPO_ID, endpoint=hub.url)
    assert hub.requests == []
    monkeypatch.setenv("HF_TOKEN", token)
    assert push(art, REPO_ID, endpoint=hub.url).commit_oid is not None
    assert set(hub.auth_headers) == {f"Bearer {token}"}


def test_branch_and_private(hub, make_artifact, token):
    art = make_artifact()
    result = push(art, REPO_ID, token=token, endpoint=hub.url, revision="w4a16-v1", private=True,
                  commit_message="first cut")
    assert result.revision == "w4a16-v1"
    assert hub.repos[REPO_ID].private
    assert hub.head_files(REPO_ID, "main") == {}
    files = hub.head_files(REPO_ID, "w4a16-v1")
    assert {p: e.sha256 for p, e in files.items()} == {
        p: hashlib.sha256(b).hexdigest() for p, b in _snapshot(art).items()}
    api = HfApi(endpoint=hub.url, token=token)
    assert sorted(api.list_repo_files(REPO_ID, revision="w4a16-v1")) == sorted(files)


def test_readme_hash_recorded_in_manifest(hub, make_artifact, token):
    art = make_artifact()
    old = json.loads((art / "kvant.json").read_text())
    push(art, REPO_ID, token=token, endpoint=hub.url)
    new = json.loads((art / "kvant.json").read_text())
    assert new["files"]["README.md"] == hashlib.sha256((art / "README.md").read_bytes()).hexdigest()
    assert new["files"]["README.md"] != old["files"]["README.md"]
    assert {k: v for k, v in new.items() if k != "files"} == {k: v for k, v in old.items() if k != "files"}
    assert {k: v for k, v in new["files"].items() if k != "README.md"} == \
        {k: v for k, v in old["files"].items() if k != "README.md"}


@pytest.mark.parametrize("repo_id", ["noslash", "a/b/c", "/name", "ns/"])
def test_bad_repo_id(make_artifact, repo_id, token):
    with pytest.raises(ValueError, match="repo_id must be 'namespace/name'"):
        push(make_artifact(), repo_id, token=token, endpoint="http://127.0.0.1:9")


def test_unreachable_endpoint_is_one_line(make_artifact, token):
    with pytest.raises(KvantError, match=r"^cannot reach http://127\.0\.0\.1:9: "):
        push(make_artifact(), REPO_ID, token=token, endpoint="http://127.0.0.1:9")


def test_token_without_write_access(start_hub, make_artifact, token):
    hub = start_hub("lfs-basic", read_only_token="hf_readonly")
    with pytest.raises(KvantError) as exc:
        push(make_artifact(), REPO_ID, token="hf_readonly", endpoint=hub.url)
    assert str(exc.value) == f"permission denied for {REPO_ID} on {hub.url}: check that HF_TOKEN may write there"
    assert hub.commits == []


def test_hidden_files_are_neither_checked_nor_pushed(hub, make_artifact, token):
    art = make_artifact()
    (art / ".cache" / "huggingface").mkdir(parents=True)
    (art / ".cache" / "huggingface" / "model.safetensors.metadata").write_text("download state")
    result = push(art, REPO_ID, token=token, endpoint=hub.url)
    assert not any(p.startswith(".") for p in result.uploaded)
    assert set(hub.head_files(REPO_ID)) == {p for p, _ in result.files}


def test_rerun_after_failed_commit_does_not_resend_weights(hub, make_artifact, token):
    art = make_artifact()
    hub.fail_commits = 1
    with pytest.raises(KvantError, match=f"^upload to {hub.url} failed: "):
        push(art, REPO_ID, token=token, endpoint=hub.url)
    assert hub.commits == []
    weights = f"/lfs-upload/{hashlib.sha256((art / 'model.safetensors').read_bytes()).hexdigest()}"
    assert hub.requests.count(("PUT", weights)) == 1
    result = push(art, REPO_ID, token=token, endpoint=hub.url)
    assert len(hub.commits) == 1 and set(hub.commits[0][2]) == set(result.uploaded)
    assert hub.requests.count(("PUT", weights)) == 1  # the stored LFS object was not sent again


def test_files_only_on_the_hub_are_reported_not_deleted(hub, make_artifact, token, caplog):
    from huggingface_hub import CommitOperationAdd

    art = make_artifact()
    push(art, REPO_ID, token=token, endpoint=hub.url)
    HfApi(endpoint=hub.url, token=token).create_commit(
        REPO_ID, [CommitOperationAdd("model-00002-of-00002.safetensors", b"\0old shard")], commit_message="old")
    with caplog.at_level(logging.WARNING, logger="kvant"):
        result = push(art, REPO_ID, token=token, endpoint=hub.url)
    assert result.extra_remote == ("model-00002-of-00002.safetensors",) and result.commit_oid is None
    assert "model-00002-of-00002.safetensors" in hub.head_files(REPO_ID)
    assert "also holds files this artifact lacks: model-00002-of-00002.safetensors" in caplog.text
