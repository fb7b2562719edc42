"""Streaming calibration: the checkpoint read layer by layer through a meta skeleton, activations spilled to disk
past their budget, weights written in shards as layers finish. Each is checked against the in-memory path that
loads the whole model (kept here as the reference)."""
import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from kvant.artifact.errors import KvantError
from kvant.engine.loader import load_model
from kvant.quantize import artifact, calibrate
from kvant.quantize.api import quantize
from kvant.quantize.calibrate import plan_linears, quantize_layers
from kvant.quantize.plan import Summary
from kvant.quantize.recipe import load_recipe, recipe_from_dict
from kvant.quantize.streaming import ActivationBudget, Activations, Checkpoint


def _in_memory_weights(src, recipe, out) -> str:
    # today's reference: the whole model from transformers, every layer in RAM, one write at the end
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kvant.quantize.calibration_data import load_calibration

    hf = AutoModelForCausalLM.from_pretrained(src, dtype="auto").eval()
    summary = Summary()
    plan = plan_linears(hf, recipe, summary)
    calib = load_calibration(recipe.calibration, AutoTokenizer.from_pretrained(src), hf)
    tensors = quantize_layers(hf, recipe, plan, calib, torch.device("cpu"), summary=summary)
    tied = hf.config.tie_word_embeddings
    tensors.update({n: t.detach().to("cpu", hf.dtype) for n, t in hf.state_dict().items()
                    if not n.startswith("model.layers.") and not (tied and n == "lm_head.weight")})
    out.mkdir()
    artifact.write_weights(out, tensors)
    return _sha256(out / "model.safetensors")


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_streaming_is_byte_identical_on_default_model(default_model, tmp_path, monkeypatch):
    recipe = load_recipe("w4a16-gptq").with_calibration(num_samples=2, seq_len=32)
    want = _in_memory_weights(default_model, recipe, tmp_path / "ref")
    art = quantize(str(default_model), recipe, tmp_path / "streamed", device="cpu")
    assert _sha256(art / "model.safetensors") == want
    # every activation spilled to disk: still the same bytes
    monkeypatch.setattr(calibrate, "ACTIVATION_BYTES_CPU", 0)
    art = quantize(str(default_model), recipe, tmp_path / "spilled", device="cpu")
    assert _sha256(art / "model.safetensors") == want


def test_static_fp8_with_kv_scales_streams_like_in_memory(tiny_models, tmp_path):
    # activation scales and KV-cache observers see the same activations through the skeleton
    recipe = load_recipe("fp8-static").with_calibration(num_samples=2, seq_len=16)
    want = _in_memory_weights(tiny_models["qwen3"], recipe, tmp_path / "ref")
    art = quantize(str(tiny_models["qwen3"]), recipe, tmp_path / "streamed", device="cpu")
    assert _sha256(art / "model.safetensors") == want


def test_sharded_artifact_loads_with_the_same_tensors(tiny_models, tmp_path, monkeypatch):
    recipe = load_recipe("w4a16-gptq").with_calibration(num_samples=2, seq_len=16)
    whole = quantize(str(tiny_models["llama"]), recipe, tmp_path / "whole", device="cpu")
    monkeypatch.setattr(artifact, "MAX_SHARD_BYTES", 64 << 10)
    sharded = quantize(str(tiny_models["llama"]), recipe, tmp_path / "sharded", device="cpu")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and not (sharded / "model.safetensors").exists()
    assert not list(sharded.glob("*.tmp"))
    with safe_open(str(whole / "model.safetensors"), "pt") as f:
        want = {k: f.get_tensor(k) for k in f.keys()}
    got = Checkpoint(sharded, None).read(list(want))
    assert set(index["weight_map"]) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    ids = torch.tensor([1, 5, 9, 13])
    a, b = load_model(whole, torch.float32), load_model(sharded, torch.float32)
    with torch.no_grad():
        assert torch.equal(a(ids, torch.arange(4)), b(ids, torch.arange(4)))


def test_model_free_path_writes_shards_as_it_goes(tiny_models, tmp_path, monkeypatch):
    # the data-free path hands each tensor to the shard writer as it is produced: shard files are on disk before the
    # last weight is quantized, and the sharded artifact holds the same tensors as the one-file one
    from kvant.quantize import model_free

    recipe = {"scheme": "W4A16", "group_size": 128, "algorithm": "rtn"}
    whole = quantize(str(tiny_models["llama"]), recipe_from_dict(recipe), tmp_path / "whole", device="cpu")
    monkeypatch.setattr(artifact, "MAX_SHARD_BYTES", 64 << 10)
    shards_seen = []
    real = model_free.quantize_weight

    def counting(*args, **kwargs):
        shards_seen.append(len(list(tmp_path.glob(".sharded.kvant-tmp-*/shard-*.tmp"))))
        return real(*args, **kwargs)

    monkeypatch.setattr(model_free, "quantize_weight", counting)
    sharded = quantize(str(tiny_models["llama"]), recipe_from_dict(recipe), tmp_path / "sharded", device="cpu")
    files = sorted(set(json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert shards_seen[-1] >= 2 and len(files) > shards_seen[-1]
    with safe_open(str(whole / "model.safetensors"), "pt") as f:
        want = {k: f.get_tensor(k) for k in f.keys()}
    got = Checkpoint(sharded, None).read(list(want))
    assert len(got) == len(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_model_free_path_maps_no_file_while_it_quantizes(tiny_models, tmp_path, monkeypatch):
    # a mapping held across the loop counts every page read so far in host RSS (17 GiB for 8B on one file): each
    # tensor is read through its own short-lived mapping, and none is open while a weight is quantized
    import contextlib

    from kvant.quantize import model_free

    real_open, real_quantize = model_free.safe_open, model_free.quantize_weight
    state = {"open": 0, "opens": 0, "quantized_while_open": 0, "quantized": 0}

    @contextlib.contextmanager
    def tracked(*args, **kwargs):
        with real_open(*args, **kwargs) as f:
            state["open"] += 1
            state["opens"] += 1
            try:
                yield f
            finally:
                state["open"] -= 1

    def quantize_weight(*args, **kwargs):
        state["quantized"] += 1
        state["quantized_while_open"] += state["open"] > 0
        return real_quantize(*args, **kwargs)

    monkeypatch.setattr(model_free, "safe_open", tracked)
    monkeypatch.setattr(model_free, "quantize_weight", quantize_weight)
    recipe = recipe_from_dict({"scheme": "W4A16", "group_size": 128, "algorithm": "rtn"})
    quantize(str(tiny_models["llama"]), recipe, tmp_path / "art", device="cpu")
    assert state["quantized"] == 2 * 7 and state["quantized_while_open"] == 0 and state["open"] == 0
    assert state["opens"] > state["quantized"]


def test_activations_spill_past_the_budget_and_round_trip(tmp_path):
    budget = ActivationBudget(torch.device("cpu"), 3 * 64 * 2)  # room for three [8, 8] bf16 tensors
    store = Activations(budget)
    xs = [torch.randn(8, 8).to(torch.bfloat16) for _ in range(5)]
    for x in xs:
        store.append(x)
    assert budget.left == 0 and budget.spilled_bytes == 2 * 64 * 2
    assert sum(isinstance(i, torch.Tensor) for i in store.items) == 3
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(store, xs))
    spill_dir = budget._dir
    assert len(list(spill_dir.iterdir())) == 2
    store.free()
    assert budget.left == 3 * 64 * 2 and not list(spill_dir.iterdir())
    budget.close()
    assert not spill_dir.exists()


def test_checkpoint_names_a_missing_tensor(tiny_models):
    ckpt = Checkpoint(tiny_models["llama"], torch.bfloat16)
    with pytest.raises(KvantError, match="model.layers.9.mlp.up_proj.weight"):
        ckpt.read(["model.layers.9.mlp.up_proj.weight"])
