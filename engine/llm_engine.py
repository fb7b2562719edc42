import time
from collections import deque

from kvant.engine.block_manager import BlockManager
from kvant.engine.detokenizer import IncrementalDetokenizer, find_stop, partial_stop_len
from kvant.engine.config import EngineConfig
from kvant.engine.model import CausalLM
from kvant.engine.model_runner import DecodeLaunch, ModelRunner
from kvant.engine.outputs import CompletionOutput, EngineStats, RequestOutput
from kvant.engine.sampling_params import SamplingParams
from kvant.engine.scheduler import ScheduledBatch, Scheduler
from kvant.engine.sequence import PENDING_TOKEN, Sequence

STATS_WINDOW_S = 5.0  # tokens/s in stats() average over this many seconds of steps


class RequestState:
    """A request's n sequences, its text state and its prompt logprobs."""

    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int], params: SamplingParams,
                 seqs: list[Sequence], tokenizer):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = list(prompt_token_ids)  # our own copy, shared by every output of the request
        self.params = params
        self.seqs = seqs
        # the other samples start once the first has its prompt in the cache, so they share its blocks
        self.held_back = seqs[1:]
        self.detoks = [IncrementalDetokenizer(tokenizer, prompt_token_ids, params.skip_special_tokens)
                       if tokenizer is not None else None for _ in seqs]
        self.texts = [""] * len(seqs)
        self.prompt_logprobs: list[dict[int, float] | None] | None = (
            [None] * len(prompt_token_ids) if params.prompt_logprobs is not None else None)

    @property
    def finished(self) -> bool:
        return all(s.is_finished for s in self.seqs)

    def output(self) -> RequestOutput:
        outs = []
        for seq, text in zip(self.seqs, self.texts):
            if seq.finish_reason is None and self.params.stop:
                text = text[:len(text) - partial_stop_len(text, self.params.stop)]
            outs.append(CompletionOutput(
                index=seq.index, text=text, token_ids=seq.output_token_ids,
                cumulative_logprob=seq.cumulative_logprob if seq.logprobs is not None else None,
                logprobs=list(seq.logprobs) if seq.logprobs is not None else None,
                finish_reason=seq.finish_reason, stop_reason=seq.stop_reason))
        return RequestOutput(self.request_id, self.prompt, self.prompt_token_ids,  # one list, shared by every output
                             list(self.prompt_logprobs) if self.prompt_logprobs is not None else None,
                             outs, self.finished, num_cached_tokens=self.seqs[0].num_cached_tokens)


class LLMEngine:
    """step() = schedule → run the model → postprocess. Single-threaded; AsyncLLM drives it from one thread.

    Async scheduling (on where decode runs in CUDA graphs): a pure decode step is launched without waiting for its
    tokens. Each sequence gets a PENDING_TOKEN placeholder, the next step is scheduled and launched with the
    pending ids read on the device, and only then are the previous step's tokens read and processed, while the
    GPU runs. A sequence that turns out to have finished has computed one extra row, which is discarded."""

    def __init__(self, model: CausalLM, tokenizer, config: EngineConfig, kernel_path=None):
        mc = model.config
        if config.max_model_len is not None and config.max_model_len > mc.max_model_len:
            raise ValueError(f"max_model_len must be <= the model's {mc.max_model_len}, got {config.max_model_len}")
        self.model_config = mc
        self.config = config
        self.kernel_path = kernel_path  # the GEMM/KV path kernel_select chose (None: CPU, torch references)
        self.tokenizer = tokenizer
        self._token_text: dict[int, str] = {}  # token id -> its decoded text, for Logprob.decoded_token
        self.max_model_len = config.max_model_len or mc.max_model_len
        eos = tuple(mc.eos_token_ids)
        if not eos and tokenizer is not None and tokenizer.eos_token_id is not None:
            eos = (tokenizer.eos_token_id,)
        self.eos_token_ids = eos
        self.runner = ModelRunner(model, config, self.max_model_len)
        self.async_scheduling = config.async_scheduling if config.async_scheduling is not None else \
            self.runner.use_graphs
        self._launched: DecodeLaunch | None = None  # the step whose tokens are pending
        self.block_manager = BlockManager(self.runner.num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, config.max_num_batched_tokens)
        self.requests: dict[str, RequestState] = {}
        self._seq_by_id: dict[int, tuple[RequestState, int]] = {}
        self._next_seq_id = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self._recent: deque[tuple[float, int, int]] = deque()  # (time, prompt tokens, generated tokens) per step

    # requests
    def tokenize(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("prompt must be token ids: this engine has no tokenizer")
            return self.tokenizer(prompt).input_ids
        if not isinstance(prompt, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                            for t in prompt):
            raise ValueError(f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
        return list(prompt)

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None) -> None:
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise ValueError(f"sampling_params must be a SamplingParams, got {type(params).__name__}")
        if request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} is already in use")
        ids = self.tokenize(prompt)
        if not ids:
            raise ValueError("prompt must not be empty")
        if len(ids) > self.max_model_len:
            raise ValueError(f"prompt is {len(ids)} tokens, longer than max_model_len ({self.max_model_len})")
        vocab = self.model_config.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"prompt token ids must be in [0, {vocab}), got {min(ids)}..{max(ids)}")
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer; use stop_token_ids")
        seqs = []
        for i in range(params.n):
            seq = Sequence(self._next_seq_id, request_id, i, ids, params, self.config.block_size)
            self._next_seq_id += 1
            seqs.append(seq)
        state = RequestState(request_id, prompt if isinstance(prompt, str) else None, ids, params, seqs,
                             self.tokenizer)
        self.requests[request_id] = state
        for i, seq in enumerate(seqs):
            self._seq_by_id[seq.seq_id] = (state, i)
        self.scheduler.add(seqs[0])

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request now; its blocks return to the pool. Returns its final output (None if unknown)."""
        state = self.requests.pop(request_id, None)
        if state is None:
            return None
        for seq in state.seqs:
            if not seq.is_finished:
                seq.drop_pending_token()  # a launched step's row for it is discarded
                seq.finish_reason = "abort"
                self._release(seq)
        state.held_back = []
        return state.output()

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # stepping
    def step(self, finished_only: bool = False) -> list[RequestOutput]:
        """One scheduling step; returns the cumulative output of every request that gained tokens or finished
        (`finished_only`: of those that finished, for callers that do not stream and so skip building the rest).
        With async scheduling, a step returns the outputs of the step launched before it."""
        if self._launched is not None and (
                self.scheduler.waiting or not self._launchable(list(self.scheduler.running))):
            return self._collect(finished_only)  # the next step is not a plain decode: it needs the tokens first
        batch = self.scheduler.schedule()
        if not batch.seqs:
            if self._launched is not None:
                return self._collect(finished_only)
            if self.requests:
                raise RuntimeError(f"{len(self.requests)} requests are pending but none could be scheduled")
            return []
        if self._launched is not None or (self.async_scheduling and self._launchable(batch.seqs)):
            return self._launch(batch, finished_only)  # (with a step launched, the batch is running seqs only)
        sample_seqs, sampled, prompt_logprobs = self.runner.run(batch)
        self.scheduler.postprocess(batch)
        num_prompt = sum(n for s, n in zip(batch.seqs, batch.num_new_tokens) if s.num_output_tokens == 0 or n > 1)
        self.prompt_tokens_total += num_prompt
        touched: dict[str, RequestState] = {}
        for seq_id, (first, dicts) in prompt_logprobs.items():
            state, _ = self._seq_by_id[seq_id]
            state.prompt_logprobs[first:first + len(dicts)] = self._decoded(dicts)
        for j, seq in enumerate(sample_seqs):
            state, i = self._seq_by_id[seq.seq_id]
            if seq.num_output_tokens == 0 and state.held_back and seq is state.seqs[0]:
                for sibling in state.held_back:
                    self.scheduler.add(sibling)
                state.held_back = []
            self._append(state, i, seq, sampled.token_ids[j], sampled.logprobs[j], sampled.sampled_logprobs[j])
            touched[state.request_id] = state
        self._count_step(num_prompt, len(sample_seqs))
        return self._outputs(touched, finished_only)

    def _launch(self, batch: ScheduledBatch, finished_only: bool) -> list[RequestOutput]:
        """Launch a decode step, then process the tokens of the step launched before it while this one runs."""
        prev = self._launched
        seqs = [s for s in batch.seqs if not self._ends_at_pending_token(s)]  # no row that is sure to be dropped
        if not seqs:
            return self._collect(finished_only)
        launch = self.runner.launch_decode(seqs, prev)
        outputs = self._collect(finished_only) if prev else []
        # after the collect, so that full blocks are hashed with real token ids; a sequence that finished there
        # is left out (its row of this step is discarded)
        running = [s for s in seqs if not s.is_finished]
        self.scheduler.postprocess(ScheduledBatch(running, [1] * len(running)))
        for seq in running:
            seq.append_token(PENDING_TOKEN)
        self._launched = launch
        if not self.requests:  # nothing is left to read this step's tokens: wait for it here
            self._collect(finished_only)
        return outputs

    def _ends_at_pending_token(self, seq: Sequence) -> bool:
        # its pending token reaches max_tokens or max_model_len: it finishes when the token is read
        return seq.has_pending_token and self._at_length_limit(seq)

    def _at_length_limit(self, seq: Sequence) -> bool:
        p = seq.params
        return (p.max_tokens is not None and seq.num_output_tokens >= p.max_tokens) or \
            seq.num_tokens >= self.max_model_len

    def _launchable(self, seqs: list[Sequence]) -> bool:
        """True when these sequences' next step is a plain decode (prompt in the cache, a first token sampled)
        that the runner can launch without the host reading tokens."""
        return all(s.num_uncomputed_tokens == 1 and s.num_output_tokens > 0 for s in seqs) and \
            self.runner.can_launch(seqs)

    def _collect(self, finished_only: bool) -> list[RequestOutput]:
        """Read the launched step's tokens and process them: each pending placeholder becomes its token."""
        launch, self._launched = self._launched, None
        tokens = self.runner.collect(launch)
        touched: dict[str, RequestState] = {}
        live = [seq for seq in launch.seqs if not seq.is_finished]  # finished or aborted since the launch: dropped
        for seq in live:
            state, i = self._seq_by_id[seq.seq_id]
            seq.drop_pending_token()
            self._append(state, i, seq, tokens[launch.rows[seq.seq_id]], None, 0.0)
            touched[state.request_id] = state
        self._count_step(0, len(live))
        return self._outputs(touched, finished_only)

    def _count_step(self, num_prompt: int, num_generated: int) -> None:
        self.generation_tokens_total += num_generated
        now = time.monotonic()
        self._recent.append((now, num_prompt, num_generated))
        while self._recent and now - self._recent[0][0] > STATS_WINDOW_S:
            self._recent.popleft()

    def _outputs(self, touched: dict[str, RequestState], finished_only: bool) -> list[RequestOutput]:
        outputs = []
        for state in touched.values():
            finished = state.finished
            if finished or not finished_only:
                outputs.append(state.output())
            if finished:
                del self.requests[state.request_id]
        return outputs

    @property
    def memory_plan(self):
        """The runner's plan, on every device (on CPU and fixed pools it reports what was allocated)."""
        return self.runner.memory_plan

    def _decoded(self, dicts: list[dict]) -> list[dict]:
        """Fill each Logprob's decoded_token (vLLM's field) from the tokenizer, one decode per distinct token id."""
        if self.tokenizer is None:
            return dicts
        cache = self._token_text
        for entry in dicts:
            for token, lp in entry.items():
                if token not in cache:
                    cache[token] = self.tokenizer.decode([token])
                lp.decoded_token = cache[token]
        return dicts

    def _append(self, state: RequestState, i: int, seq: Sequence, token: int, logprobs, sampled_logprob) -> None:
        p = seq.params
        seq.append_token(token)
        if logprobs is not None:
            seq.logprobs.append(self._decoded([logprobs])[0])
            seq.cumulative_logprob += sampled_logprob
        n_out = seq.num_output_tokens
        stopped_by_token = False
        if n_out >= p.min_tokens:
            if token in (p.stop_token_ids or ()):
                seq.finish_reason, seq.stop_reason, stopped_by_token = "stop", token, True
            elif not p.ignore_eos and token in self.eos_token_ids:
                seq.finish_reason, stopped_by_token = "stop", True
        detok = state.detoks[i]
        if detok is not None and not stopped_by_token:
            delta = detok.add(token)
            text = state.texts[i] + delta
            if p.stop and delta and n_out >= p.min_tokens:
                hit = find_stop(text, len(delta), p.stop)
                if hit is not None:
                    text = text[:hit[0]]
                    seq.finish_reason, seq.stop_reason = "stop", hit[1]
            state.texts[i] = text
        if seq.finish_reason is None and self._at_length_limit(seq):
            seq.finish_reason = "length"
        if seq.finish_reason is not None:
            self._release(seq)

    def _release(self, seq: Sequence) -> None:
        self.scheduler.finish(seq)
        self.runner.release_sequence(seq.seq_id)
        self._seq_by_id.pop(seq.seq_id, None)

    def stats(self) -> EngineStats:
        bm = self.block_manager
        span = (self._recent[-1][0] - self._recent[0][0]) if len(self._recent) > 1 else 0.0
        gen = sum(r[2] for r in list(self._recent)[1:])
        prm = sum(r[1] for r in list(self._recent)[1:])
        return EngineStats(
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting)
            + sum(len(s.held_back) for s in self.requests.values()),
            kv_cache_usage=bm.usage, prefix_cache_hit_rate=bm.prefix_hit_rate,
            prompt_tokens_total=self.prompt_tokens_total, generation_tokens_total=self.generation_tokens_total,
            num_free_blocks=bm.num_free_blocks, num_blocks=bm.num_blocks,
            num_preemptions=self.scheduler.num_preemptions,
            generation_tokens_per_s=gen / span if span > 0 else 0.0,
            prompt_tokens_per_s=prm / span if span > 0 else 0.0)
