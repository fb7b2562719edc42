"""`kvant bench profile` on a tiny config on the CPU: one decode step's ops counted and attributed."""
import json

from kvant.tui.cli import main

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1001,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "rope_theta": 10000.0,
        "eos_token_id": 2, "bos_token_id": 1}


def test_bench_profile_on_cpu(tmp_path, capsys):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "profile.json"
    rc = main(["bench", "profile", "--model", str(cfg), "--batch-sizes", "1,3", "--input-len", "9", "--steps", "3",
               "--top", "100", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 3]
    for r in rows:
        assert r["device"] == "cpu" and not r["graph"] and r["replay_ms"] == 0 and r["host_ms"] is None
        assert r["step_ms"] > 0 and r["kernels_per_step"] == sum(k["calls"] for k in r["top_kernels"])
        assert r["kernels_per_layer"] == r["kernels_per_step"] / 2
        # one decode step's matmuls: qkv, o, gate_up, down in each of the 2 layers, then the lm_head
        mm = sum(k["calls"] for k in r["top_kernels"] if k["name"] in ("aten::linear", "aten::mm", "aten::addmm"))
        assert mm == 2 * 4 + 1
    assert "kernels/step" in capsys.readouterr().out
