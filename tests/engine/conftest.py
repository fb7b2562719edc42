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


@pytest.fixture(scope="session")
def hf_greedy(hf_model, real_prompts) -> list[list[int]]:
    """transformers' greedy continuation of each prompt, generated alone (no padding), computed once."""
    outs = []
    with torch.inference_mode():
        for ids in real_prompts:
            x = torch.tensor([ids])
            y = hf_model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS, do_sample=False,
                                  temperature=None, top_p=None, top_k=None)
            outs.append(y[0, len(ids):].tolist())
    return outs


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
    with torch.inference_mode():
        for _ in range(max_tokens):
            x = torch.tensor(ids)
            logits = model.compute_logits(model(x, torch.arange(len(ids)))[-1:])
            ids.append(int(logits.argmax()))
    return ids[len(prompt):]
