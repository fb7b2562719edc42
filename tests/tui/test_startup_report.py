"""What `kvant serve` prints when ready: the kernel path, the KV cache size and the time to ready."""
import torch

from kvant.engine.config import ModelConfig
from kvant.engine.llm import LLM
from kvant.engine.loader import dummy_model
from kvant.quantize.rtn import quantize_model_rtn
from kvant.tui.commands.serve import startup_report

CFG = ModelConfig(architecture="LlamaForCausalLM", vocab_size=128, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                  max_position_embeddings=128, max_model_len=64, tie_word_embeddings=False, eos_token_ids=(2,),
                  rope_theta=10000.0)


def test_report_names_kernel_path_kv_tokens_and_time():
    model = quantize_model_rtn(dummy_model(CFG, dtype=torch.float32), "fp8")
    llm = LLM.from_model(model, None, kernel_arch="sm_86", num_kv_blocks=8, max_model_len=64)
    text = startup_report(llm.engine, 1.25)
    assert "kernels: fp8_weight_only GEMM" in text and "sm_86 has no FP8 tensor cores" in text
    assert "memory on cpu:" in text and "= 128 tokens (8 blocks of 16); KV pool set by num_kv_blocks" in text
    assert "ready in 1.2 s" in text or "ready in 1.3 s" in text


def test_report_without_forced_arch_on_cpu_has_no_kernel_line():
    llm = LLM.from_model(dummy_model(CFG, dtype=torch.float32), None, num_kv_blocks=8, max_model_len=64)
    text = startup_report(llm.engine, 0.5)
    assert not text.startswith("kernels:") and "ready in 0.5 s (tune " in text and "; 0 CUDA graphs)" in text


def test_report_says_where_start_up_time_went_and_triton_caches_under_kvant_home(default_model, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setenv("KVANT_HOME", str(tmp_path / "home"))
    llm = LLM(str(default_model), skip_tokenizer_init=True, num_kv_blocks=8, max_model_len=64, device="cpu")
    times = llm.engine.startup_times
    assert list(times) == ["imports", "verify", "plan", "load", "tune", "graphs"]
    assert all(s >= 0 for s in times.values())
    assert times["load"] > 0
    text = startup_report(llm.engine, sum(times.values()))
    assert f"(imports {times['imports']:.1f} s, verify {times['verify']:.1f} s, plan {times['plan']:.1f} s, load {times['load']:.1f} s" in text
    import os

    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "home" / "triton")
