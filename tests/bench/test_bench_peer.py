"""`kvant bench throughput --peer hf` on a tiny config on the CPU: both engines finish the same workload."""
import json

import pytest

from kvant.tui.cli import main

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 10001,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "rope_theta": 10000.0,
        "eos_token_id": 2, "bos_token_id": 1}


@pytest.mark.slow
def test_bench_throughput_with_hf_peer(tmp_path, capsys):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "result.json"
    rc = main(["bench", "throughput", "--model", str(cfg), "--workload", "W4", "--limit", "3", "--peer", "hf",
               "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["output_tokens"] == res["peer"]["output_tokens"] == 3 * 128
    assert res["ratio_to_peer"] == pytest.approx(res["output_tok_per_s"] / res["peer"]["output_tok_per_s"])
    assert "kvant is" in capsys.readouterr().out


def test_peer_needs_a_config(tmp_path, capsys):
    rc = main(["bench", "throughput", "--model", "smollm2-135m", "--limit", "1", "--peer", "hf"])
    assert rc == 2
    assert "--peer hf needs --model as a config .json" in capsys.readouterr().err
