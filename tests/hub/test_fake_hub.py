"""The fake Hub against the real client alone: the behaviours push relies on and the ones it guards against."""
import hashlib
import io
import urllib.error
import urllib.request

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError

REPO_ID = "kvant-test/fidelity"


@pytest.mark.parametrize("mode", ["lfs-basic", "xet"])
def test_unchanged_upload_folder_sends_no_commit(mode, start_hub, token, tmp_path):
    hub = start_hub(mode)
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "w.safetensors").write_bytes(bytes(range(256)) * 4096)
    api = HfApi(endpoint=hub.url, token=token)
    api.create_repo(REPO_ID)
    first = api.upload_folder(repo_id=REPO_ID, folder_path=folder)
    second = api.upload_folder(repo_id=REPO_ID, folder_path=folder)
    assert len(hub.commits) == 1 and second.oid == first.oid


def test_parent_commit_conflict_and_missing_entry(hub, token, tmp_path):
    api = HfApi(endpoint=hub.url, token=token)
    api.create_repo(REPO_ID)
    first = api.create_commit(REPO_ID, [CommitOperationAdd("a.txt", b"one")], commit_message="one")
    api.create_commit(REPO_ID, [CommitOperationAdd("a.txt", b"two")], commit_message="two")
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(REPO_ID, [CommitOperationAdd("a.txt", b"three")], commit_message="three",
                          parent_commit=first.oid)
    assert exc.value.response.status_code == 412
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO_ID, "missing.txt", endpoint=hub.url, token=token, cache_dir=tmp_path / "cache")
    path = hf_hub_download(REPO_ID, "a.txt", endpoint=hub.url, token=token, cache_dir=tmp_path / "cache")
    assert open(path, "rb").read() == b"two"


def test_lfs_content_is_checked_against_its_oid(hub, token):
    data = b"weights" * 1000
    api = HfApi(endpoint=hub.url, token=token)
    api.create_repo(REPO_ID)
    api.create_commit(REPO_ID, [CommitOperationAdd("w.safetensors", io.BytesIO(data))], commit_message="w")
    assert hub.blobs[hashlib.sha256(data).hexdigest()] == data
    wrong_oid = hashlib.sha256(b"something else").hexdigest()
    req = urllib.request.Request(f"{hub.url}/lfs-upload/{wrong_oid}", data=data, method="PUT")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req)
    assert exc.value.code == 400


def test_range_download(hub, token):
    api = HfApi(endpoint=hub.url, token=token)
    api.create_repo(REPO_ID)
    api.create_commit(REPO_ID, [CommitOperationAdd("t.txt", b"0123456789")], commit_message="t")
    req = urllib.request.Request(f"{hub.url}/{REPO_ID}/resolve/main/t.txt", headers={"Range": "bytes=3-6"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == b"3456"
        assert r.headers["Content-Range"] == "bytes 3-6/10"
