"""POST /v1/chat/completions: the tokenizer's chat template, n, chat-shape logprobs, streaming deltas."""
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from kvant.engine.outputs import CompletionOutput, RequestOutput
from kvant.engine.server.errors import ApiError, param_of_value_error
from kvant.engine.server.generation import Job, stream_outputs
from kvant.engine.server.logprobs import TokenText, chat_logprobs
from kvant.engine.server.prompts import Prompt, check_stop_token_ids, output_budget, render_chat
from kvant.engine.server.protocol import ChatCompletionRequest, chat_params, default_max_tokens
from kvant.engine.server.state import ServerState, new_id, now_s, stream_chunk, usage
from kvant.engine.server.streaming import sse_response


def prepare(state: ServerState, req: ChatCompletionRequest, request_id: str) -> tuple[Prompt, Job]:
    state.check_model(req.model)
    check_stop_token_ids(state.tokenizer, req.stop_token_ids)
    prompt = render_chat(state.tokenizer, req.chat_messages(), req.add_generation_prompt,
                         req.continue_final_message)
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    # unset: whatever room the context leaves, as vLLM does for chat
    room = state.max_model_len - len(prompt.token_ids)
    requested = default_max_tokens(req.requested_max_tokens(), state.default_sampling, room)
    budget = output_budget(len(prompt.token_ids), requested, state.max_model_len, param)
    try:
        params = chat_params(req, budget, state.default_sampling)
    except ValueError as exc:
        raise ApiError(400, str(exc), param_of_value_error(str(exc), set(ChatCompletionRequest.model_fields)))
    return prompt, Job(request_id, prompt.token_ids, params)


async def create_chat_completion(state: ServerState, req: ChatCompletionRequest):
    request_id = new_id("chatcmpl")
    # the chat template and tokenizer run in a worker thread, so the event loop keeps answering
    prompt, job = await run_in_threadpool(prepare, state, req, request_id)
    state.admission.check(1)
    token_text = TokenText(state.tokenizer)
    if req.stream:
        return sse_response(_stream(state, req, request_id, prompt, job, token_text))
    final = None
    async for _, out in stream_outputs(state.engine, [job], state.admission, state.metrics):
        final = out
    choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text},
                "logprobs": _logprobs(req, token_text, c, 0), "finish_reason": c.finish_reason,
                "stop_reason": c.stop_reason} for c in final.outputs]
    choices.sort(key=lambda ch: ch["index"])
    return {"id": request_id, "object": "chat.completion", "created": now_s(), "model": state.model_name,
            "choices": choices, "usage": _usage(prompt, final), "system_fingerprint": None}


def _logprobs(req: ChatCompletionRequest, token_text: TokenText, c: CompletionOutput, start: int) -> dict | None:
    if not req.logprobs:
        return None
    entries = (c.logprobs or [])[start:]
    return chat_logprobs(token_text, c.token_ids[start:start + len(entries)], entries, req.top_logprobs or 0)


def _usage(prompt: Prompt, out: RequestOutput | None) -> dict:
    if out is None:
        return usage(len(prompt.token_ids), 0, 0)
    return usage(len(prompt.token_ids), sum(len(c.token_ids) for c in out.outputs), out.num_cached_tokens)


async def _stream(state: ServerState, req: ChatCompletionRequest, request_id: str, prompt: Prompt, job: Job,
                  token_text: TokenText) -> AsyncIterator[dict]:
    chunk = stream_chunk(request_id, "chat.completion.chunk", state.model_name, req.include_usage)
    sent_text: dict[int, int] = {}
    sent_tokens: dict[int, int] = {}
    final = None

    # OpenAI's first chunk per choice carries only the role
    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                 for i in range(req.n)])
    async for _, out in stream_outputs(state.engine, [job], state.admission, state.metrics):
        final = out
        choices = []
        for c in out.outputs:
            done_before = sent_tokens.get(c.index, 0)
            if len(c.token_ids) == done_before and c.finish_reason is None:
                continue
            text = c.text[sent_text.get(c.index, 0):]
            choices.append({"index": c.index, "delta": {"content": text} if text else {},
                            "logprobs": _logprobs(req, token_text, c, done_before),
                            "finish_reason": c.finish_reason, "stop_reason": c.stop_reason})
            sent_text[c.index] = len(c.text)
            sent_tokens[c.index] = len(c.token_ids)
        if choices:
            body = chunk(choices)
            if req.stream_options is not None and req.stream_options.continuous_usage_stats:
                body["usage"] = _usage(prompt, final)
            yield body
    if req.include_usage:
        yield chunk([], _usage(prompt, final))
