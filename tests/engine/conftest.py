import json

import pytest
import torch

from kvant.engine.config import ModelConfig

# CI runs on 2 shared cores: torch's intra-op threads oversubscribe them and small CPU matmuls become ~20x slower
torch.set_num_threads(1)

NUM_PROMPTS = 24
NEW_TOKENS = 64
# mixed prompt lengths in tokens, cycled over the prompts
PROMPT_LENGTHS = (3, 17, 40, 9, 75, 130, 26, 55)


@pytest.fixture(scope="session")
def model_path(default_model):
    return default_model


@pytest.fixture(scope="session")
def tokenizer(model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="session")
def real_prompts(shared_data, tokenizer) -> list[list[int]]:
    """24 WikiText-2 test paragraphs cut to mixed lengths (token ids)."""
    rows = (json.loads(line)["text"] for line in
            (shared_data / "wikitext-2-raw" / "wikitext-2-raw-v1.test.rows.jsonl").open())
    paragraphs = [t.strip() for t in rows if len(t.split()) > 150][:NUM_PROMPTS]
    return [tokenizer(p).input_ids[:PROMPT_LENGTHS[i % len(PROMPT_LENGTHS)]] for i, p in enumerate(paragraphs)]


@pytest.fixture(scope="session")
def kvant_model(model_path):
    from kvant.engine.loader import load_model

    return load_model(model_path, dtype=torch.float32, device="cpu")


@pytest.fixture(scope="session")
def hf_model(model_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()


def hf_generate(hf_model, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """transformers' greedy continuations, one left-padded batch with an attention mask (positions follow the
    mask); each output is cut at its first eos, as an unpadded generate would stop there."""
    width = max(len(p) for p in prompts)
    pad = hf_model.generation_config.pad_token_id or 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    eos = hf_model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    with torch.inference_mode():
        out = hf_model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                temperature=None, top_p=None, top_k=None, pad_token_id=pad)[:, width:].tolist()
    cut = []
    for row in out:
        end = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        cut.append(row[:end])
    return cut


@pytest.fixture(scope="session")
def hf_greedy(hf_model, real_prompts) -> list[list[int]]:
    return hf_generate(hf_model, real_prompts, NEW_TOKENS)


TINY = ModelConfig(architecture="LlamaForCausalLM", vocab_size=96, hidden_size=64, intermediate_size=128,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   max_position_embeddings=256, max_model_len=256, tie_word_embeddings=True, eos_token_ids=(1,))


@pytest.fixture(scope="session")
def tiny_model():
    from kvant.engine.loader import dummy_model

    # larger weights than the default init, so greedy continuations vary instead of repeating one token
    model = dummy_model(TINY, dtype=torch.float32, device="cpu", seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(10)
    return model


def reference_greedy(model, prompt: list[int], max_tokens: int) -> list[int]:
    """Greedy decoding by full causal forwards without a KV cache (no engine code involved)."""
    ids = list(prompt)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for _ in range(max_tokens):
            x = torch.tensor(ids, device=device)
            logits = model.compute_logits(model(x, torch.arange(len(ids), device=device))[-1:])
            ids.append(int(logits.argmax()))
    return ids[len(prompt):]
