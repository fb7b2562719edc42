"""The 503 queue limit (with a gated in-test engine that honours AsyncLLM's contract) and the Prometheus text."""
import asyncio
import math
import threading

import httpx
import pytest

from kvant.engine.outputs import CompletionOutput, EngineStats, RequestOutput
from kvant.engine.server.metrics import Histogram, ServerMetrics

MODEL_NAME = "gated"


class GatedEngine:
    """AsyncLLM's public API; every request waits for `gate` before its single output token."""

    def __init__(self, tokenizer, max_model_len: int = 256):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.gate = threading.Event()
        self.started: list[str] = []
        self.aborted: list[str] = []

    def stats(self) -> EngineStats:
        return EngineStats(num_running=0, num_waiting=len(self.started), kv_cache_usage=0.0,
                           prefix_cache_hit_rate=0.0, prompt_tokens_total=0, generation_tokens_total=0,
                           num_free_blocks=8, num_blocks=8)

    async def generate(self, prompt, params, request_id):
        self.started.append(request_id)
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        token = prompt[-1]
        yield RequestOutput(request_id, None, list(prompt), None,
                            [CompletionOutput(0, self.tokenizer.decode([token]), [token], None, None, "length")],
                            True)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def shutdown(self) -> None:
        return None


def test_more_waiting_requests_than_max_queue_get_503(serve_app, tokenizer):
    from kvant.engine.server import build_app

    engine = GatedEngine(tokenizer)
    srv = serve_app(build_app(engine, MODEL_NAME, max_queue=2))
    body = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 1}
    results = {}

    def post(key):
        results[key] = httpx.post(srv.base_url + "/v1/completions", json=body, timeout=30)

    waiting = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    for t in waiting:
        t.start()
    while len(engine.started) < 2:
        threading.Event().wait(0.01)
    refused = httpx.post(srv.base_url + "/v1/completions", json=body, timeout=30)
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "ServiceUnavailableError"
    engine.gate.set()
    for t in waiting:
        t.join()
    assert [results[i].status_code for i in range(2)] == [200, 200]
    # the queue drained: a new request is admitted again
    assert httpx.post(srv.base_url + "/v1/completions", json=body, timeout=30).status_code == 200
    assert engine.aborted == []  # finished requests are not aborted


def test_histogram_buckets_are_cumulative_with_le_semantics():
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        h.observe(value)
    lines = h.lines("x", 'm="a"')
    # hand count: <= 0.1 -> {0.05, 0.1}; <= 1.0 -> + 0.5; +Inf -> all four
    assert lines[:3] == ['x_bucket{m="a",le="0.1"} 2', 'x_bucket{m="a",le="1.0"} 3', 'x_bucket{m="a",le="+Inf"} 4']
    assert lines[3] == f'x_sum{{m="a"}} {0.05 + 0.1 + 0.5 + 2.0!r}'
    assert lines[4] == 'x_count{m="a"} 4'


def test_metrics_text_names_and_values():
    metrics = ServerMetrics("m")
    metrics.observe_first_token(0.2)
    metrics.observe_finished(e2e_s=1.2, ttft_s=0.2, num_tokens=5, finish_reason="length")
    stats = EngineStats(num_running=3, num_waiting=4, kv_cache_usage=0.25, prefix_cache_hit_rate=0.5,
                        prompt_tokens_total=100, generation_tokens_total=40, num_free_blocks=6, num_blocks=8)
    values = {}
    for line in metrics.render(stats).splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    label = '{model_name="m"}'
    assert values[f"kvant:num_requests_running{label}"] == 3
    assert values[f"kvant:num_requests_waiting{label}"] == 4
    assert values[f"kvant:kv_cache_usage_perc{label}"] == 0.25
    assert values[f"kvant:prefix_cache_hit_rate{label}"] == 0.5
    assert values[f"kvant:prompt_tokens_total{label}"] == 100
    assert values[f"kvant:generation_tokens_total{label}"] == 40
    assert values['kvant:request_success_total{model_name="m",finished_reason="length"}'] == 1
    # TPOT = (e2e - ttft) / (tokens - 1) = 1.0 / 4
    assert math.isclose(values[f"kvant:request_time_per_output_token_seconds_sum{label}"], 0.25)
    assert values[f"kvant:time_to_first_token_seconds_count{label}"] == 1


@pytest.mark.parametrize("max_queue", [-1, 1.5, "3"])
def test_bad_max_queue_is_refused(tokenizer, max_queue):
    from kvant.engine.server import build_app

    with pytest.raises(ValueError, match="max_queue"):
        build_app(GatedEngine(tokenizer), MODEL_NAME, max_queue=max_queue)
