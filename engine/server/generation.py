"""Drive one HTTP request's engine requests (one per prompt) through AsyncLLM, merged into one ordered stream.

Invariant: when the merged stream ends for any reason (done, error, client gone, cancelled), every engine request it
started has either finished or been aborted, so its KV blocks are free again.
"""
import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from kvant.engine.outputs import RequestOutput
from kvant.engine.sampling_params import SamplingParams
from kvant.engine.server.errors import ApiError
from kvant.engine.server.metrics import ServerMetrics


@dataclass(slots=True, frozen=True)
class Job:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


class Admission:
    """Counts engine requests that have no output yet (queued or prefilling); refuses past max_queue."""

    def __init__(self, max_queue: int):
        if not isinstance(max_queue, int) or max_queue < 0:
            raise ValueError(f"max_queue must be an integer >= 0, got {max_queue!r}")
        self.max_queue = max_queue
        self.num_waiting = 0

    def check(self, num_jobs: int) -> None:
        # counted when the jobs start (stream_outputs), so a stream the client drops before it starts leaks nothing
        if self.num_waiting + num_jobs > self.max_queue:
            raise ApiError(503, f"the server is busy: {self.num_waiting} requests are waiting "
                                f"(--max-queue {self.max_queue}); retry later")

    def admit(self, num_jobs: int) -> None:
        self.num_waiting += num_jobs

    def release(self, num_jobs: int = 1) -> None:
        self.num_waiting -= num_jobs


@dataclass(slots=True)
class _Timing:
    arrival: float
    first: float | None = None
    last: float | None = None
    num_tokens: int = 0


_DONE = object()


async def _pump(engine, index: int, job: Job, queue: asyncio.Queue) -> None:
    try:
        async for out in engine.generate(job.prompt_token_ids, job.params, job.request_id):
            await queue.put((index, out))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # handed to the consumer, which re-raises it in the request's context
        await queue.put((index, exc))
        return
    await queue.put((index, _DONE))


async def stream_outputs(engine, jobs: list[Job], admission: Admission,
                         metrics: ServerMetrics) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Yields (job index, cumulative RequestOutput) as the engine produces them."""
    admission.admit(len(jobs))
    queue: asyncio.Queue = asyncio.Queue()
    now = time.monotonic()
    timings = [_Timing(now) for _ in jobs]
    waiting = set(range(len(jobs)))  # jobs still counted by `admission`
    finished: set[int] = set()
    tasks = [asyncio.create_task(_pump(engine, i, job, queue)) for i, job in enumerate(jobs)]
    try:
        num_open = len(jobs)
        while num_open:
            index, item = await queue.get()
            if item is _DONE:
                num_open -= 1
                continue
            if isinstance(item, Exception):
                raise item
            if index in waiting:
                waiting.discard(index)
                admission.release()
            _observe(metrics, timings[index], item)
            if item.finished:
                finished.add(index)
            yield index, item
    finally:
        admission.release(len(waiting))
        unfinished = [jobs[i].request_id for i in range(len(jobs)) if i not in finished]
        for task in tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):
            for request_id in unfinished:
                await engine.abort(request_id)
            await asyncio.gather(*tasks, return_exceptions=True)


def _observe(metrics: ServerMetrics, timing: _Timing, out: RequestOutput) -> None:
    now = time.monotonic()
    num_tokens = sum(len(c.token_ids) for c in out.outputs)
    if timing.first is None and num_tokens > 0:
        timing.first = now
        metrics.observe_first_token(now - timing.arrival)
    elif timing.last is not None and num_tokens > timing.num_tokens:
        metrics.observe_gap(now - timing.last, num_tokens - timing.num_tokens)
    if num_tokens > timing.num_tokens:
        timing.last = now
        timing.num_tokens = num_tokens
    if out.finished:
        ttft = None if timing.first is None else timing.first - timing.arrival
        reason = out.outputs[0].finish_reason if out.outputs else None
        num_longest = max((len(c.token_ids) for c in out.outputs), default=0)
        metrics.observe_finished(now - timing.arrival, ttft, num_longest, reason or "abort")
