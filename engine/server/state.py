import time
import uuid
from dataclasses import dataclass, field

from kvant.engine.server.errors import ApiError
from kvant.engine.server.generation import Admission
from kvant.engine.server.metrics import ServerMetrics


@dataclass(slots=True, frozen=True)
class ServerState:
    engine: object  # AsyncLLM or anything with its public API
    model_name: str
    tokenizer: object
    max_model_len: int
    admission: Admission
    metrics: ServerMetrics
    api_key: str | None
    created: int  # unix seconds; reported by /v1/models
    default_sampling: dict = field(default_factory=dict)  # --generation-config: SamplingParams fields + max_tokens

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise ApiError(404, f"The model `{model}` does not exist.", "model")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now_s() -> int:
    return int(time.time())


def stream_chunk(request_id: str, kind: str, model_name: str, include_usage: bool):
    """The chunk builder of one streamed response: every chunk has the same id, object kind and creation time, and a
    `usage` field only when the client asked for it (stream_options.include_usage)."""
    created = now_s()

    def chunk(choices: list[dict], usage_value: dict | None = None) -> dict:
        body = {"id": request_id, "object": kind, "created": created, "model": model_name, "choices": choices}
        if include_usage:
            body["usage"] = usage_value
        return body

    return chunk


def usage(num_prompt_tokens: int, num_completion_tokens: int, num_cached_tokens: int) -> dict:
    return {"prompt_tokens": num_prompt_tokens, "completion_tokens": num_completion_tokens,
            "total_tokens": num_prompt_tokens + num_completion_tokens,
            "prompt_tokens_details": {"cached_tokens": num_cached_tokens}}
