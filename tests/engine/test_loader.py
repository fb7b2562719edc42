import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kvant.engine.config import ModelConfig
from kvant.artifact.errors import KvantError
from kvant.engine.loader import dummy_model, load_config_file, load_model

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Water boils at a temperature of",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "1, 2, 3, 5, 8, 13,",
    "Translate to German: Good morning, how are you?",
    "The three primary colours are",
]


def _kvant_logits(model, ids: list[int]) -> torch.Tensor:
    t = torch.tensor(ids)
    with torch.no_grad():
        return model.compute_logits(model(t, torch.arange(len(ids))))


def _hf_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def test_default_model_logits_match_transformers(default_model):
    tok = AutoTokenizer.from_pretrained(default_model)
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, tokenize=False)
    prompts = PROMPTS + [chat]
    assert len(prompts) == 8
    ours = load_model(default_model, dtype=torch.float32)
    hf = AutoModelForCausalLM.from_pretrained(default_model, dtype=torch.float32).eval()
    for text in prompts:
        ids = tok(text)["input_ids"]
        a, b = _kvant_logits(ours, ids), _hf_logits(hf, ids)
        assert a.shape == (len(ids), 49152)
        assert (a - b).abs().max().item() < 1e-4, text


def _tiny(kind: str):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6)
    if kind == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=False)
    if kind == "qwen3":
        return Qwen3Config(**common, head_dim=32, tie_word_embeddings=True)
    if kind == "mistral":
        return MistralConfig(**common, sliding_window=None)
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    return LlamaConfig(**common, rope_parameters=rope)


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "mistral", "llama3-rope"])
def test_tiny_random_models_match_transformers(kind, tmp_path):
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(_tiny(kind), dtype=torch.float32).eval()
    with torch.no_grad():  # randomize every tensor, biases and norms included, so each one is exercised
        for name, p in hf.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.05 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    cfg = ModelConfig.from_pretrained(tmp_path)
    assert cfg.attention_bias == (kind == "qwen2") and cfg.qk_norm == (kind == "qwen3")
    ours = load_model(tmp_path, dtype=torch.float32)
    ids = torch.randint(0, 512, (100,), generator=torch.Generator().manual_seed(1)).tolist()
    assert (_kvant_logits(ours, ids) - _hf_logits(hf, ids)).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "bench" / "configs").glob("*.json")))
def test_dummy_weights_build_for_every_shipped_config(name, monkeypatch):
    import kvant.engine.loader as loader

    def no_disk(*args, **kwargs):
        raise AssertionError("dummy weights must not read checkpoint files")

    monkeypatch.setattr(loader, "iter_safetensors", no_disk)
    monkeypatch.setattr(loader, "safe_open", no_disk)
    cfg = load_config_file(REPO / "bench" / "configs" / name)
    full = dummy_model(cfg, dtype=torch.bfloat16, device="meta")  # real shapes, no memory
    n_params = sum(p.numel() for p in full.parameters())
    assert n_params == cfg.num_params
    # a two-layer slice of the same shapes really runs, and its weights are random and reproducible
    small = ModelConfig(**{**{f: getattr(cfg, f) for f in cfg.__slots__}, "num_hidden_layers": 2})
    a = dummy_model(small, dtype=torch.float32, seed=3)
    b = dummy_model(small, dtype=torch.float32, seed=3)
    assert torch.equal(a.model.layers[1].mlp.gate_up_proj.weight, b.model.layers[1].mlp.gate_up_proj.weight)
    assert a.model.layers[1].mlp.gate_up_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    ids = torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        logits = a.compute_logits(a(ids, torch.arange(4)))
    assert logits.shape == (4, cfg.vocab_size) and torch.isfinite(logits).all()


def _one_line(exc: Exception) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_missing_model_path(tmp_path):
    with pytest.raises(KvantError) as err:
        load_model(tmp_path / "nope")
    assert "nope" in _one_line(err.value) and "does not exist" in str(err.value)


def test_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "vocab_size": 10}))
    with pytest.raises(KvantError) as err:
        load_model(tmp_path)
    msg = _one_line(err.value)
    assert "GPT2LMHeadModel" in msg and "LlamaForCausalLM" in msg and "Qwen3ForCausalLM" in msg


def test_corrupted_safetensors(default_model, tmp_path):
    for f in default_model.iterdir():
        if f.suffix != ".safetensors":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    blob = (default_model / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(blob[: len(blob) // 3])  # truncated mid-tensor
    with pytest.raises(KvantError) as err:
        load_model(tmp_path)
    msg = _one_line(err.value)
    assert "model.safetensors" in msg and "corrupted" in msg


def test_offline_hub_id(monkeypatch):
    from kvant.engine.registry import resolve_model

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(KvantError) as err:
        resolve_model("some-org/some-model-that-is-not-cached")
    msg = _one_line(err.value)
    assert "some-org/some-model-that-is-not-cached" in msg and "Hub" in msg
