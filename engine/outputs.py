from dataclasses import dataclass


class Logprob(float):
    """vLLM's Logprob: `.logprob`, `.rank` (1 = the most likely token of the vocabulary) and `.decoded_token` (None
    without a tokenizer). It is also the float itself, so code that reads logprob dicts as floats keeps working."""
    __slots__ = ("rank", "decoded_token")

    def __new__(cls, logprob: float, rank: int | None = None, decoded_token: str | None = None):
        self = super().__new__(cls, logprob)
        self.rank = rank
        self.decoded_token = decoded_token
        return self

    @property
    def logprob(self) -> float:
        return float(self)

    def __repr__(self) -> str:
        return f"Logprob(logprob={float(self)!r}, rank={self.rank!r}, decoded_token={self.decoded_token!r})"

    def __reduce__(self):
        return Logprob, (float(self), self.rank, self.decoded_token)


@dataclass(slots=True)
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None  # per token: the sampled token and the top-k
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    stop_reason: int | str | None = None  # the stop string or stop token id that ended it; None for eos/length

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None  # entry 0 is None (no context)
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache


@dataclass(slots=True, frozen=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # used blocks / all blocks, 0..1
    prefix_cache_hit_rate: float  # cached prompt tokens / prompt tokens looked up, 0..1
    prompt_tokens_total: int
    generation_tokens_total: int
    num_free_blocks: int
    num_blocks: int
    num_preemptions: int = 0
    generation_tokens_per_s: float = 0.0  # over the last few seconds of stepping
    prompt_tokens_per_s: float = 0.0
