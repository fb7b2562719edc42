"""Push a synthetic artifact to the fake Hub in each transfer mode and read it back with the real client."""
import hashlib
import json
import logging

import pytest
from huggingface_hub import HfApi, ModelCard, snapshot_download
from huggingface_hub.utils import logging as hf_logging

from kvant.artifact.errors import KvantError
from kvant.quantize.hub import push

REPO_ID = "kvant-test/smol-w4a16"

# mode -> (weight bytes, fake-hub options); multipart needs a file above the 5 MiB chunk: 20 MiB + header -> 5 parts
MODES = {
    "lfs-basic": (2**20, {}),
    "lfs-multipart": (20 * 2**20, {"chunk_size": 5 * 2**20}),
    "xet": (2**20, {}),
}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".cache" not in p.relative_to(root).parts}


@pytest.mark.parametrize("mode", list(MODES))
def test_push_roundtrip(mode, start_hub, make_artifact, token, hf_env, tmp_path, caplog, capfd):
    weight_bytes, options = MODES[mode]
    hub = start_hub(mode, **options)
    art = make_artifact(weight_bytes=weight_bytes)
    for name in ("huggingface_hub", "httpx", "httpcore", "kvant"):
        logging.getLogger(name).addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    hf_logging.set_verbosity_debug()
    try:
        result = push(art, REPO_ID, token=token, endpoint=hub.url)
    finally:
        hf_logging.set_verbosity_warning()
        for name in ("huggingface_hub", "httpx", "httpcore", "kvant"):
            logging.getLogger(name).removeHandler(caplog.handler)
    local = _files(art)
    assert result.commit_oid is not None
    assert sorted(result.uploaded) == sorted(local)
    assert hub.commits and {p for _, _, paths in hub.commits for p in paths} == set(local)
    # the transport the mode stands for carried the weights
    lfs_puts = [path for method, path in hub.requests if method == "PUT" and path.startswith("/lfs-upload/")]
    batches = [path for _, path in hub.requests if path.endswith("/info/lfs/objects/batch")]
    xet_tokens = [path for _, path in hub.requests if "/xet-write-token/" in path]
    weights_oid = hashlib.sha256(local["model.safetensors"]).hexdigest()
    if mode == "lfs-basic":
        assert batches and lfs_puts == [f"/lfs-upload/{weights_oid}"] and not xet_tokens
    elif mode == "lfs-multipart":
        num_parts = -(-len(local["model.safetensors"]) // options["chunk_size"])  # ceil
        assert num_parts >= 4
        assert sorted(lfs_puts, key=lambda p: int(p.rsplit("/", 1)[1])) == [
            f"/lfs-upload/{weights_oid}/{k}" for k in range(1, num_parts + 1)]
        assert ("POST", f"/lfs-upload/{weights_oid}") in hub.requests
    else:
        assert xet_tokens and not batches and not lfs_puts
        assert hub.head_files(REPO_ID)["model.safetensors"].data is None  # content lives only in the CAS

    # the manifest now records the regenerated card, and the card parses back to the manifest + eval results
    manifest = json.loads((art / "kvant.json").read_text())
    results = json.loads((art / "eval" / "results.json").read_text())
    assert manifest["files"]["README.md"] == hashlib.sha256((art / "README.md").read_bytes()).hexdigest()
    card = ModelCard((art / "README.md").read_text())
    assert card.data.base_model == manifest["base_model"]["name"]
    assert card.data.base_model_relation == "quantized"
    assert card.data.license == manifest["base_model"]["license"]
    assert card.data.datasets == [manifest["calibration"]["source"]]
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    # w4a16 + gptq in the manifest -> these filter tags, by hand
    assert {"kvant", "int4", "w4a16", "compressed-tensors", "gptq", "vllm"} <= set(card.data.tags)
    assert manifest["base_model"]["revision"] in card.text
    got = {(e.dataset_type, e.metric_type): e.metric_value for e in card.data.eval_results}
    want = {(t["task"], t["metric"]): t["quant"] for t in results["tasks"]}
    want[(results["perplexity"]["task"], "perplexity")] = results["perplexity"]["quant"]
    assert got == want

    # what the Hub holds equals the artifact byte for byte
    api = HfApi(endpoint=hub.url, token=token)
    assert sorted(api.list_repo_files(REPO_ID)) == sorted(local)
    if mode == "xet":  # the fake hub needs sha256 -> Xet hash to point downloads at the local CAS
        import hf_xet

        for rel in local:
            if rel.endswith(".safetensors"):
                digest = hashlib.sha256(local[rel]).hexdigest()
                hub.xet_hashes[digest] = hf_xet.hash_files([str(art / rel)])[0].hash
    out = tmp_path / "download"
    snapshot_download(REPO_ID, local_dir=out, endpoint=hub.url, token=token)
    assert _files(out) == local
    check = api.verify_repo_checksums(REPO_ID, local_dir=out)
    assert check.mismatches == [] and check.missing_paths == [] and check.extra_paths == []
    assert check.checked_count == len(local)

    # a second push sends no commit
    num_commits = len(hub.commits)
    again = push(art, REPO_ID, token=token, endpoint=hub.url)
    assert again.commit_oid is None and again.uploaded == ()
    assert len(hub.commits) == num_commits

    # after an interrupted upload only the missing file goes up
    hub.drop_file(REPO_ID, "model.safetensors")
    resumed = push(art, REPO_ID, token=token, endpoint=hub.url)
    assert resumed.uploaded == ("model.safetensors",)
    assert hub.commits[-1][2] == ["model.safetensors"]
    assert hub.head_files(REPO_ID)["model.safetensors"].sha256 == hashlib.sha256(local["model.safetensors"]).hexdigest()

    # a wrong token: one line naming the endpoint
    with pytest.raises(KvantError) as exc:
        push(art, REPO_ID, token="hf_wrong", endpoint=hub.url)
    assert str(exc.value) == f"authentication failed for {hub.url}: check HF_TOKEN"

    # nothing logged or printed carries the token, though every authenticated request sent it
    assert hub.auth_headers and all(h in (f"Bearer {token}", "Bearer hf_wrong") for h in hub.auth_headers)
    out, err = capfd.readouterr()
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert token not in caplog.text and token not in out + err
    # nor any file the client wrote (caches, hf_xet's logs under HF_HOME)
    written = [p for p in (hf_env / "hf_home").rglob("*") if p.is_file()]
    assert all(token.encode() not in p.read_bytes() for p in written)
