import shutil
from pathlib import Path

import pytest
import torch

SMOLLM2 = Path.home() / ".cache" / "kvant" / "models" / "SmolLM2-135M-Instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
VOCAB = 49152  # the copied SmolLM2 tokenizer's size


def make_tiny(out: Path, arch: str) -> Path:
    # a 2-layer random model with the default model's tokenizer, saved in bf16 like a Hub checkpoint
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

    torch.manual_seed(0)
    if arch == "llama":
        # hidden 128 and intermediate 320: down_proj's 320 inputs are not a multiple of 128 (group-size fallback)
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=320, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
        model = LlamaForCausalLM(config)
    elif arch == "mistral":
        # no GQA (v_proj and o_proj are both 64 x 64): AWQ also smooths v_proj -> o_proj
        config = MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                               sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                               pad_token_id=2)
        model = MistralForCausalLM(config)
    elif arch == "qwen2":
        # q/k/v biases (given non-zero values below), which smoothing and AWQ must leave consistent
        config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
        model = Qwen2ForCausalLM(config)
    else:
        # hidden 64 with q/k norms, GQA, untied lm_head; o_proj has 4 * 32 = 128 inputs
        config = Qwen3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                             tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)
        model = Qwen3ForCausalLM(config)
    # norms away from 1 so smoothing/scaling folded into them is exercised
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    model.to(torch.bfloat16).save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (SMOLLM2 / name).is_file():
            shutil.copy2(SMOLLM2 / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    if not (SMOLLM2 / "tokenizer.json").is_file():
        pytest.fail(f"the default model's tokenizer is missing at {SMOLLM2} (run `kvant models pull` once)")
    root = tmp_path_factory.mktemp("tiny")
    return {arch: make_tiny(root / arch, arch) for arch in ("llama", "qwen3", "qwen2", "mistral")}
