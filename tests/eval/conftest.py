import shutil
from pathlib import Path

import pytest
import torch

SMOLLM2 = Path.home() / ".cache" / "kvant" / "models" / "SmolLM2-135M-Instruct"


@pytest.fixture(scope="session")
def local_tasks(shared_data, tmp_path_factory) -> Path:
    from kvant.eval.data import prepare_tasks

    return prepare_tasks(shared_data, tmp_path_factory.mktemp("eval-data"))


@pytest.fixture(scope="session")
def task_manager(local_tasks):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(local_tasks))


@pytest.fixture(scope="session")
def engine_factory():
    from kvant.engine import LLM

    return lambda path: LLM(str(path), dtype="float32", device="cpu", max_model_len=1024, num_kv_blocks=256)


@pytest.fixture
def kvant_home(tmp_path, monkeypatch) -> Path:
    # base-model caches and prepared data go here, not into the user's ~/.cache/kvant
    monkeypatch.setenv("KVANT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    # 2 decoder layers of random bf16 weights with the default model's tokenizer; down_proj's 320 inputs take INT4
    # group 64 where 128 is asked
    from transformers import LlamaConfig, LlamaForCausalLM

    if not (SMOLLM2 / "tokenizer.json").is_file():
        pytest.fail(f"the default model's tokenizer is missing at {SMOLLM2} (run `kvant models pull` once)")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=128, intermediate_size=320, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    out = tmp_path_factory.mktemp("tiny") / "llama"
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (SMOLLM2 / name).is_file():
            shutil.copy2(SMOLLM2 / name, out / name)
    return out
