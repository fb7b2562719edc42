"""OpenAI request bodies (vLLM's field names, defaults and extras) and their translation to SamplingParams."""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from kvant.engine.sampling_params import SamplingParams

MAX_N = 128
MAX_LOGPROBS = 20  # vLLM's default max_logprobs
MAX_STOP = 16

TokenIds = list[int]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    continuous_usage_stats: bool = False


class _SamplingFields(BaseModel):
    # unknown fields are a 400 naming them, as OpenAI does: a misspelt option must not be silently ignored
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value):
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings are supported")
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        return value

    @field_validator("stop_token_ids")
    @classmethod
    def _check_stop_token_ids(cls, value):
        if value is not None and any(t < 0 for t in value):
            raise ValueError("stop_token_ids must be >= 0")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value):
        if value:
            raise ValueError("logit_bias is not supported")
        return value

    @field_validator("stream_options")
    @classmethod
    def _check_stream_options(cls, value, info: ValidationInfo):
        # a field validator (not a model one) so that the 400 names the field; `stream` is declared before it
        if value is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed when stream is true")
        return value

    def sampling_kwargs(self) -> dict:
        kwargs = dict(n=self.n, seed=self.seed, stop=self.stop, stop_token_ids=self.stop_token_ids,
                      ignore_eos=self.ignore_eos, min_tokens=self.min_tokens,
                      skip_special_tokens=self.skip_special_tokens)
        for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                     "repetition_penalty"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] | TokenIds | list[TokenIds]
    echo: bool = False  # declared before max_tokens, whose validator reads it
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError("prompt must not be empty")
            if any(isinstance(p, list) and not p for p in value):
                raise ValueError("prompt must not contain an empty token list")
            if any(isinstance(t, int) and t < 0 for t in value):
                raise ValueError("prompt token ids must be >= 0")
            if any(isinstance(p, list) and any(t < 0 for t in p) for p in value):
                raise ValueError("prompt token ids must be >= 0")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value):
        if value is not None:
            raise ValueError("suffix is not supported")
        return value

    @field_validator("max_tokens")
    @classmethod
    def _check_max_tokens(cls, value, info: ValidationInfo):
        if value == 0 and not info.data.get("echo"):
            raise ValueError("max_tokens must be at least 1 unless echo is true")
        return value

    def prompts(self) -> list[str | TokenIds]:
        # str -> [str]; [int, ...] -> [[int, ...]]; lists of either stay lists
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(t, int) for t in self.prompt):
            return [list(self.prompt)]
        return list(self.prompt)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    @field_validator("top_logprobs")
    @classmethod
    def _check_top_logprobs(cls, value, info: ValidationInfo):
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs requires logprobs to be true")
        return value

    @field_validator("continue_final_message")
    @classmethod
    def _check_continue(cls, value, info: ValidationInfo):
        if value and info.data.get("add_generation_prompt"):
            raise ValueError("continue_final_message requires add_generation_prompt to be false")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def chat_messages(self) -> list[dict]:
        return [{"role": m.role, "content": m.text(), **({"name": m.name} if m.name else {})}
                for m in self.messages]


def _with_defaults(req: _SamplingFields, defaults: dict | None) -> dict:
    # generation-config defaults (vLLM's --generation-config) first; every field the request sets overrides them
    base = {k: v for k, v in (defaults or {}).items() if k != "max_tokens"}
    return {**base, **req.sampling_kwargs()}


def default_max_tokens(requested: int | None, defaults: dict | None, room: int) -> int | None:
    """An unset max_tokens takes the generation config's max_new_tokens, capped by the context's room."""
    if requested is None and defaults and "max_tokens" in defaults:
        return min(int(defaults["max_tokens"]), room)
    return requested


def completion_params(req: CompletionRequest, max_tokens: int, defaults: dict | None = None) -> SamplingParams:
    # echo with logprobs scores the prompt itself: lm-eval's local-completions loglikelihood path
    prompt_logprobs = req.logprobs if req.echo and req.logprobs is not None else None
    return SamplingParams(max_tokens=max_tokens, logprobs=req.logprobs, prompt_logprobs=prompt_logprobs,
                          **_with_defaults(req, defaults))


def chat_params(req: ChatCompletionRequest, max_tokens: int, defaults: dict | None = None) -> SamplingParams:
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    return SamplingParams(max_tokens=max_tokens, logprobs=logprobs, **_with_defaults(req, defaults))
