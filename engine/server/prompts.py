"""Prompts to token ids, and the context-length checks vLLM applies before a request reaches the engine."""
from dataclasses import dataclass

from jinja2 import TemplateError

from kvant.engine.server.errors import ApiError


@dataclass(slots=True, frozen=True)
class Prompt:
    text: str  # as given, or decoded from the given token ids
    token_ids: list[int]


def vocab_size(tokenizer) -> int:
    return len(tokenizer)


def encode(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    # the Rust tokenizer's batch call releases the GIL (its single `encode` holds it for the whole text, ~1 s per
    # MB): a long prompt tokenized in a worker thread then leaves the event loop free. Same ids as
    # transformers' encode, which makes this very call.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))
    # `.ids` builds the list under the GIL (~50 ms per million tokens): unavoidable, and bounded by the body limit
    return backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids


def decode(tokenizer, token_ids: list[int]) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return tokenizer.decode(token_ids)
    return backend.decode_batch([token_ids], skip_special_tokens=False)[0]


def tokenize_prompt(tokenizer, prompt: str | list[int]) -> Prompt:
    if isinstance(prompt, str):
        ids = encode(tokenizer, prompt, add_special_tokens=True)
        if not ids:
            raise ApiError(400, "prompt must contain at least one token", "prompt")
        return Prompt(prompt, ids)
    limit = vocab_size(tokenizer)
    bad = [t for t in prompt if t >= limit]
    if bad:
        raise ApiError(400, f"prompt token id {bad[0]} is out of range for the vocabulary of {limit} tokens",
                       "prompt")
    return Prompt(decode(tokenizer, prompt), list(prompt))


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool, continue_final_message: bool) -> Prompt:
    if getattr(tokenizer, "chat_template", None) is None:
        raise ApiError(400, "this model's tokenizer has no chat template; use /v1/completions", "messages")
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             continue_final_message=continue_final_message)
    except (TemplateError, ValueError) as exc:
        raise ApiError(400, f"messages cannot be rendered by the chat template: {exc}", "messages") from exc
    # the template already holds the special tokens (BOS, role markers); do not add them twice
    ids = encode(tokenizer, text, add_special_tokens=False)
    if not ids:
        raise ApiError(400, "messages render to an empty prompt", "messages")
    return Prompt(text, ids)


def check_stop_token_ids(tokenizer, stop_token_ids: list[int] | None) -> None:
    limit = vocab_size(tokenizer)
    for t in stop_token_ids or ():
        if t >= limit:
            raise ApiError(400, f"stop_token_ids: {t} is out of range for the vocabulary of {limit} tokens",
                           "stop_token_ids")


def output_budget(num_prompt_tokens: int, requested: int | None, max_model_len: int, param: str) -> int:
    """The max_tokens to run with; a 400 with vLLM's message when the prompt or prompt + requested don't fit."""
    asked = 0 if requested is None else requested
    if num_prompt_tokens >= max_model_len:
        raise ApiError(400, f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                            f"{asked} output tokens and your prompt contains at least {num_prompt_tokens} input "
                            f"tokens, for a total of at least {num_prompt_tokens + asked} tokens. Please reduce the "
                            f"length of the input prompt or the number of requested output tokens. "
                            f"(parameter=input_tokens, value={num_prompt_tokens})", "input_tokens")
    room = max_model_len - num_prompt_tokens
    if requested is None:
        return room
    if requested > room:
        raise ApiError(400, f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                            f"{requested} output tokens and your prompt contains {num_prompt_tokens} input tokens, "
                            f"for a total of {num_prompt_tokens + requested} tokens. Please reduce the length of the "
                            f"input prompt or the number of requested output tokens. "
                            f"(parameter={param}, value={requested})", param)
    return requested
