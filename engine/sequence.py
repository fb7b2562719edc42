from enum import Enum, auto

from kvant.engine.sampling_params import SamplingParams


# async scheduling: a token that was sampled on the device but not yet read by the host (always the last token)
PENDING_TOKEN = -1


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


class Sequence:
    """One sample of a request: its tokens, how many of them are in the KV cache, and its blocks."""

    def __init__(self, seq_id: int, request_id: str, index: int, prompt_token_ids: list[int],
                 params: SamplingParams, block_size: int):
        if not prompt_token_ids:
            raise ValueError("prompt must contain at least one token")
        self.seq_id = seq_id
        self.request_id = request_id
        self.index = index  # which of the request's n samples
        self.params = params
        self.block_size = block_size
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0  # tokens whose K/V are in the cache
        self.num_cached_tokens = 0  # of those, served by the prefix cache at the last admission
        self.block_table: list[int] = []
        self.block_hashes: list[bytes] = []  # chained content hashes of the leading full, computed blocks
        self.num_preemptions = 0
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.logprobs: list[dict[int, float]] | None = [] if params.logprobs is not None else None
        self.cumulative_logprob = 0.0

    def __len__(self) -> int:
        return len(self.token_ids)

    def __repr__(self) -> str:
        return (f"Sequence({self.seq_id}, {self.status.name}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={self.block_table})")

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[:self.num_prompt_tokens]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def in_prefill(self) -> bool:
        # prompt (or, after preemption, prompt + outputs so far) not yet fully in the cache
        return self.num_uncomputed_tokens > 1

    @property
    def cacheable_tokens(self) -> int:
        # leading tokens the prefix cache may serve: one token is always computed, and prompt logprobs need the row
        # before each position they cover (row j predicts token j + 1)
        if self.params.prompt_logprobs is None:
            return self.num_tokens - 1
        return min(self.num_tokens - 1, max(self.params.prompt_logprobs_from - 1, 0))

    @property
    def uses_prefix_cache(self) -> bool:
        return self.params.prompt_logprobs is None or self.cacheable_tokens >= self.block_size

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def block_tokens(self, i: int) -> list[int]:
        return self.token_ids[i * self.block_size:(i + 1) * self.block_size]

    def slot(self, position: int) -> int:
        return self.block_table[position // self.block_size] * self.block_size + position % self.block_size

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    @property
    def has_pending_token(self) -> bool:
        return self.token_ids[-1] == PENDING_TOKEN

    def drop_pending_token(self) -> None:
        if self.has_pending_token:
            self.token_ids.pop()

    def reset_for_recompute(self) -> None:
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.block_table = []
        self.block_hashes = []
        self.num_preemptions += 1
