"""POST /v1/completions: prompts (strings or token ids), n, echo, legacy-shape logprobs, streaming."""
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from kvant.engine.outputs import CompletionOutput, RequestOutput
from kvant.engine.server.errors import ApiError, param_of_value_error
from kvant.engine.server.generation import Job, stream_outputs
from kvant.engine.server.logprobs import TokenText, completion_logprobs, merge_completion_logprobs
from kvant.engine.server.prompts import Prompt, check_stop_token_ids, output_budget, tokenize_prompt
from kvant.engine.server.protocol import CompletionRequest, completion_params, default_max_tokens
from kvant.engine.server.state import ServerState, new_id, now_s, stream_chunk, usage
from kvant.engine.server.streaming import sse_response


def prepare(state: ServerState, req: CompletionRequest, request_id: str) -> tuple[list[Prompt], list[Job]]:
    state.check_model(req.model)
    check_stop_token_ids(state.tokenizer, req.stop_token_ids)
    prompts = [tokenize_prompt(state.tokenizer, p) for p in req.prompts()]
    echo_only = req.echo and req.max_tokens == 0
    jobs = []
    for i, prompt in enumerate(prompts):
        # echo with max_tokens 0 scores the prompt only; the engine still runs (and we drop) one token
        requested = 1 if echo_only else req.max_tokens
        if "max_tokens" not in req.model_fields_set:  # unset: the generation config's, else vLLM's 16
            room = state.max_model_len - len(prompt.token_ids)
            requested = default_max_tokens(None, state.default_sampling, room) or requested
        budget = output_budget(len(prompt.token_ids), requested, state.max_model_len, "max_tokens")
        try:
            params = completion_params(req, budget, state.default_sampling)
        except ValueError as exc:
            raise ApiError(400, str(exc), param_of_value_error(str(exc), set(CompletionRequest.model_fields)))
        jobs.append(Job(f"{request_id}-{i}", prompt.token_ids, params))
    return prompts, jobs


async def create_completion(state: ServerState, req: CompletionRequest):
    request_id = new_id("cmpl")
    # tokenizing a long prompt takes a while: a worker thread, so the event loop keeps answering
    prompts, jobs = await run_in_threadpool(prepare, state, req, request_id)
    state.admission.check(len(jobs))
    view = _ChoiceView(state, req, prompts)
    if req.stream:
        return sse_response(_stream(state, req, request_id, jobs, view))
    finals: dict[int, RequestOutput] = {}
    async for index, out in stream_outputs(state.engine, jobs, state.admission, state.metrics):
        finals[index] = out
    choices = []
    for index in range(len(jobs)):
        out = finals[index]
        for c in out.outputs:
            choices.append(view.choice(index, out, c))
    choices.sort(key=lambda ch: ch["index"])
    return {"id": request_id, "object": "text_completion", "created": now_s(), "model": state.model_name,
            "choices": choices, "usage": view.usage(finals), "system_fingerprint": None}


class _ChoiceView:
    def __init__(self, state: ServerState, req: CompletionRequest, prompts: list[Prompt]):
        self.req = req
        self.prompts = prompts
        self.echo_only = req.echo and req.max_tokens == 0
        self.token_text = TokenText(state.tokenizer)

    def index(self, prompt_index: int, output: CompletionOutput) -> int:
        return prompt_index * self.req.n + output.index

    def prompt_logprobs(self, prompt_index: int, out: RequestOutput) -> dict:
        prompt = self.prompts[prompt_index]
        entries = out.prompt_logprobs or [None] * len(prompt.token_ids)
        return completion_logprobs(self.token_text, prompt.token_ids, entries, 0)

    def output_logprobs(self, prompt_index: int, c: CompletionOutput, start: int, text_offset: int) -> dict:
        entries = (c.logprobs or [])[start:]
        return completion_logprobs(self.token_text, c.token_ids[start:start + len(entries)], entries, text_offset)

    def choice(self, prompt_index: int, out: RequestOutput, c: CompletionOutput) -> dict:
        prompt = self.prompts[prompt_index]
        text = "" if self.echo_only else c.text
        logprobs = None
        if self.req.logprobs is not None:
            offset = len(prompt.text) if self.req.echo else 0
            logprobs = None if self.echo_only else self.output_logprobs(prompt_index, c, 0, offset)
            if self.req.echo:
                head = self.prompt_logprobs(prompt_index, out)
                logprobs = head if logprobs is None else merge_completion_logprobs(head, logprobs)
        if self.req.echo:
            text = prompt.text + text
        finish = "length" if self.echo_only else c.finish_reason
        return {"index": self.index(prompt_index, c), "text": text, "logprobs": logprobs, "finish_reason": finish,
                "stop_reason": None if self.echo_only else c.stop_reason}

    def usage(self, finals: dict[int, RequestOutput]) -> dict:
        num_prompt = sum(len(p.token_ids) for p in self.prompts)
        num_completion = 0 if self.echo_only else sum(
            len(c.token_ids) for out in finals.values() for c in out.outputs)
        num_cached = sum(out.num_cached_tokens for out in finals.values())
        return usage(num_prompt, num_completion, num_cached)


async def _stream(state: ServerState, req: CompletionRequest, request_id: str, jobs: list[Job],
                  view: _ChoiceView) -> AsyncIterator[dict]:
    chunk = stream_chunk(request_id, "text_completion", state.model_name, req.include_usage)
    sent_text: dict[int, int] = {}  # choice index -> characters sent
    sent_tokens: dict[int, int] = {}  # choice index -> tokens sent
    finals: dict[int, RequestOutput] = {}

    async for prompt_index, out in stream_outputs(state.engine, jobs, state.admission, state.metrics):
        finals[prompt_index] = out
        choices = []
        for c in out.outputs:
            index = view.index(prompt_index, c)
            first = index not in sent_text
            done_before = sent_tokens.get(index, 0)
            if view.echo_only:
                if c.finish_reason is None:
                    continue
                choices.append(view.choice(prompt_index, out, c))
                sent_text[index], sent_tokens[index] = 0, len(c.token_ids)
                continue
            if not first and len(c.token_ids) == done_before and c.finish_reason is None:
                continue
            text = c.text[sent_text.get(index, 0):]
            logprobs = None
            if req.logprobs is not None:
                offset = (len(view.prompts[prompt_index].text) if req.echo else 0) + sent_text.get(index, 0)
                logprobs = view.output_logprobs(prompt_index, c, done_before, offset)
                if first and req.echo:
                    logprobs = merge_completion_logprobs(view.prompt_logprobs(prompt_index, out), logprobs)
            if first and req.echo:
                text = view.prompts[prompt_index].text + text
            sent_text[index] = len(c.text)
            sent_tokens[index] = len(c.token_ids)
            choices.append({"index": index, "text": text, "logprobs": logprobs, "finish_reason": c.finish_reason,
                            "stop_reason": c.stop_reason})
        if choices:
            body = chunk(choices)
            if req.stream_options is not None and req.stream_options.continuous_usage_stats:
                body["usage"] = view.usage(finals)
            yield body
    if req.include_usage:
        yield chunk([], view.usage(finals))
