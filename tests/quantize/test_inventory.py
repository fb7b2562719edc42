"""`kvant models list` / `kvant recipes list`: artifacts with base, scheme, size, bits per weight, gate, checksums."""
import json

import torch
from safetensors.torch import load_file

from kvant.eval.inventory import describe, list_artifacts
from kvant.artifact import manifest
from kvant.quantize.api import quantize
from kvant.quantize.recipe import load_recipe, recipe_from_dict, shipped_recipe_names
from kvant.tui import cli

W4_RTN = {"scheme": "W4A16", "group_size": 32, "targets": ["Linear"], "ignore": ["lm_head"], "algorithm": "rtn"}


def _expected_bits(folder) -> float:
    # independent count: load every tensor, bits of codes + scales + zero points over the weights they encode
    tensors = load_file(str(folder / "model.safetensors"))
    bits = weights = 0
    for key, scale in tensors.items():
        if not key.endswith(".weight_scale"):
            continue
        layer = key.removesuffix(".weight_scale")
        if f"{layer}.weight_packed" in tensors:
            rows, cols = (int(v) for v in tensors[f"{layer}.weight_shape"])
            codes = tensors[f"{layer}.weight_packed"]
        else:
            codes = tensors[f"{layer}.weight"]
            rows, cols = codes.shape
        weights += rows * cols
        bits += codes.numel() * codes.element_size() * 8 + scale.numel() * scale.element_size() * 8
        zp = tensors.get(f"{layer}.weight_zero_point")
        if zp is not None:
            bits += zp.numel() * zp.element_size() * 8
    return bits / weights


def test_artifact_rows(tiny_models, tmp_path, capsys):
    root = tmp_path / "artifacts"
    w8 = quantize(str(tiny_models["llama"]), load_recipe("w8a16-int8"), root / "a-w8", device="cpu")
    w4 = quantize(str(tiny_models["llama"]), recipe_from_dict(W4_RTN), root / "b-w4", device="cpu")
    (root / "not-an-artifact").mkdir()
    rows = list_artifacts(root)
    assert [r.name for r in rows] == ["a-w8", "b-w4"]
    assert [r.scheme for r in rows] == ["w8a16", "w4a16"]
    assert all(r.base == json.loads((w8 / "kvant.json").read_text())["base_model"]["name"] for r in rows)
    assert rows[0].bits_per_weight == _expected_bits(w8) and 8 < rows[0].bits_per_weight < 9
    assert rows[1].bits_per_weight == _expected_bits(w4) and 4 < rows[1].bits_per_weight < 5
    assert rows[0].size_bytes == sum(f.stat().st_size for f in w8.rglob("*") if f.is_file())
    assert [(r.gate, r.checksums) for r in rows] == [("not evaluated", "ok")] * 2

    (w8 / "eval").mkdir()
    (w8 / "eval" / "results.json").write_text(json.dumps({"passed": True}))
    manifest.update_files(w8)
    (w4 / "eval").mkdir()
    (w4 / "eval" / "results.json").write_text(json.dumps({"passed": False}))
    manifest.update_files(w4)
    with open(w4 / "model.safetensors", "r+b") as f:  # one flipped byte inside the tensor data
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    assert describe(w8).gate == "pass" and describe(w8).checksums == "ok"
    bad = describe(w4)
    assert bad.gate == "fail" and "model.safetensors does not match its sha256" in bad.checksums

    assert cli.main(["models", "list", "--artifacts-dir", str(root)]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("a-w8"))
    assert "w8a16" in line and "pass" in line and line.rstrip().endswith("ok")
    assert f"{rows[0].bits_per_weight:.2f}" in line


def test_recipes_list_shows_each_recipe_with_its_description(capsys):
    assert cli.main(["recipes", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = shipped_recipe_names()
    assert [l.split()[0] for l in lines] == names
    for line, name in zip(lines, names):
        recipe = load_recipe(name)
        assert recipe.scheme in line and " ".join(recipe.description.split()) in line
