import json

from kvant.artifact import manifest
from kvant.quantize.recipe import shipped_recipe_names
from kvant.tui.cli import main


def test_kvant_quantize_end_to_end(tiny_models, tmp_path, capsys):
    out = tmp_path / "w4"
    rc = main(["quantize", str(tiny_models["llama"]), "--recipe", "w4a16-gptq", "--out", str(out),
               "--num-samples", "3", "--seq-len", "24", "--dataset", "builtin", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith(f"wrote {out} in ") and "peak memory" in lines[0]
    assert "worst layer output error" in lines[0]
    assert lines[1] == "group size fallbacks: down_proj 64"
    assert "loading model" in captured.err and "done" in captured.err
    manifest.verify(out)
    data = manifest.read(out)
    assert (data["scheme"], data["calibration"]["num_samples"], data["calibration"]["seq_len"]) == ("w4a16", 3, 24)
    assert data["calibration"]["source"] == "builtin"
    assert json.loads((out / "config.json").read_text())["quantization_config"]["format"] == "pack-quantized"

    # the same --out again: refused on one line, exit 2, artifact untouched
    before = (out / "kvant.json").read_bytes()
    rc = main(["quantize", str(tiny_models["llama"]), "--recipe", "w8a16-int8", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == f"error: {out} already exists (use --force to overwrite)"
    assert (out / "kvant.json").read_bytes() == before


def test_kvant_quantize_bad_recipe_is_one_line(tiny_models, tmp_path, capsys):
    rc = main(["quantize", str(tiny_models["llama"]), "--recipe", "int3", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: recipe 'int3' is neither a file nor a shipped recipe")
    assert len(err.strip().splitlines()) == 1
    assert all(name in err for name in shipped_recipe_names())
    assert not (tmp_path / "o").exists()
