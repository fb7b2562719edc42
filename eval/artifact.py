"""Checking the base model against the artifact before any evaluation (the manifest itself: kvant.artifact)."""
from pathlib import Path

from kvant.artifact.errors import KvantError
from kvant.engine.config import ModelConfig

# fields that must agree for the base's scores to be a fair reference (same network, same tokenizer)
MATCHING_FIELDS = ("architecture", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


def check_same_model(base_path: Path, artifact: Path) -> None:
    base, quant = ModelConfig.from_pretrained(base_path), ModelConfig.from_pretrained(artifact)
    for name in MATCHING_FIELDS:
        if getattr(base, name) != getattr(quant, name):
            raise KvantError(f"base model {base_path} does not match the artifact: {name} is "
                             f"{getattr(base, name)} in the base and {getattr(quant, name)} in the artifact")
