"""The prompt forms `LLM.generate` accepts, vLLM's and kvant's, reduced to what the engine takes (str | ids)."""
from collections.abc import Sequence

PROMPT_KEYS = ("prompt", "prompt_token_ids")  # vLLM's TextPrompt and TokensPrompt


def _is_token_ids(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def _one(prompt) -> str | list[int]:
    if isinstance(prompt, str):
        return prompt
    if _is_token_ids(prompt):
        return list(prompt)
    if isinstance(prompt, dict):
        unknown = sorted(set(prompt) - set(PROMPT_KEYS))
        if unknown:
            raise ValueError(f"prompt dict keys must be 'prompt' or 'prompt_token_ids', got {', '.join(unknown)}")
        if "prompt_token_ids" in prompt:  # vLLM tokenizes nothing when token ids are given
            ids = prompt["prompt_token_ids"]
            if not _is_token_ids(ids):
                raise ValueError("prompt_token_ids must be a non-empty list of integers")
            return list(ids)
        if not isinstance(prompt.get("prompt"), str):
            raise ValueError("a prompt dict needs 'prompt' (a str) or 'prompt_token_ids' (a list of ints)")
        return prompt["prompt"]
    raise ValueError(f"prompt must be a str, a list of token ids or a dict with 'prompt' or 'prompt_token_ids', "
                     f"got {type(prompt).__name__}")


def parse_prompts(prompts) -> list[str | list[int]]:
    """str | {"prompt": str} | {"prompt_token_ids": ids} | ids, or a list of those -> one entry per request."""
    if isinstance(prompts, (str, dict)) or _is_token_ids(prompts):
        return [_one(prompts)]
    if isinstance(prompts, Sequence):
        return [_one(p) for p in prompts]
    raise ValueError(f"prompts must be a prompt or a list of prompts, got {type(prompts).__name__}")
