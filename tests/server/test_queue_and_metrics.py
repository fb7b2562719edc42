"""The 503 queue limit (with a gated in-test engine that honours AsyncLLM's contract) and the Prometheus text."""
import asyncio
import math
import threading

import httpx
import pytest

from kvant.engine.outputs import CompletionOutput, EngineStats, RequestOutput
from prometheus_client.parser import text_string_to_metric_families

from kvant.engine.server.metrics import ServerMetrics

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


def _parse(text: str) -> dict[str, dict]:
    """prometheus_client's own parser: {family name: {"type", "samples": {(sample name, labels): value}}}."""
    out = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        out[family.name] = {"type": family.type, "samples": samples}
    return out


def test_histogram_buckets_are_cumulative_with_le_semantics():
    metrics = ServerMetrics("m")
    for value in (0.0005, 0.001, 0.05, 3.0):
        metrics.observe_first_token(value)
    ttft = _parse(metrics.render(EngineStats(0, 0, 0.0, 0.0, 0, 0, 8, 8)))["kvant:time_to_first_token_seconds"]
    assert ttft["type"] == "histogram"

    def bucket(le: str) -> float:
        return ttft["samples"][("kvant:time_to_first_token_seconds_bucket", (("le", le), ("model_name", "m")))]

    # hand count: <= 0.001 -> {0.0005, 0.001}; <= 0.06 -> + 0.05; <= 5.0 -> + 3.0; +Inf -> all four
    assert (bucket("0.001"), bucket("0.04"), bucket("0.06"), bucket("2.5"), bucket("5.0"), bucket("+Inf")) == \
        (2, 2, 3, 3, 4, 4)
    label = (("model_name", "m"),)
    assert math.isclose(ttft["samples"][("kvant:time_to_first_token_seconds_sum", label)], 0.0005 + 0.001 + 0.05 + 3)
    assert ttft["samples"][("kvant:time_to_first_token_seconds_count", label)] == 4


def test_metrics_parse_with_prometheus_client_and_keep_kvant_names():
    metrics = ServerMetrics("m")
    metrics.observe_finished(e2e_s=1.2, ttft_s=0.2, num_tokens=5, finish_reason="stop")
    metrics.observe_rejected()
    families = _parse(metrics.render(EngineStats(num_running=1, num_waiting=0, kv_cache_usage=0.5,
                                                 prefix_cache_hit_rate=0.0, prompt_tokens_total=7,
                                                 generation_tokens_total=9, num_free_blocks=4, num_blocks=8,
                                                 num_preemptions=2)))
    kinds = {name: f["type"] for name, f in families.items()}
    assert kinds == {
        "kvant:num_requests_running": "gauge", "kvant:num_requests_waiting": "gauge",
        "kvant:kv_cache_usage_perc": "gauge", "kvant:prefix_cache_hit_rate": "gauge",
        "kvant:num_kv_blocks_free": "gauge", "kvant:num_kv_blocks": "gauge",
        "kvant:prompt_tokens": "counter", "kvant:generation_tokens": "counter", "kvant:num_preemptions": "counter",
        "kvant:request_rejected": "counter", "kvant:request_success": "counter",
        "kvant:time_to_first_token_seconds": "histogram", "kvant:inter_token_latency_seconds": "histogram",
        "kvant:request_time_per_output_token_seconds": "histogram", "kvant:e2e_request_latency_seconds": "histogram"}
    label = (("model_name", "m"),)
    assert families["kvant:num_preemptions"]["samples"] == {("kvant:num_preemptions_total", label): 2}
    assert families["kvant:request_rejected"]["samples"] == {("kvant:request_rejected_total", label): 1}
    assert families["kvant:request_success"]["samples"] == {
        ("kvant:request_success_total", (("finished_reason", "stop"), ("model_name", "m"))): 1}
    assert families["kvant:num_kv_blocks_free"]["samples"] == {("kvant:num_kv_blocks_free", label): 4}
    # no `_created` series: the names are exactly today's
    assert not any(name.endswith("_created") for f in families.values() for name, _ in f["samples"])


@pytest.mark.parametrize("max_queue", [-1, 1.5, "3"])
def test_bad_max_queue_is_refused(tokenizer, max_queue):
    from kvant.engine.server import build_app

    with pytest.raises(ValueError, match="max_queue"):
        build_app(GatedEngine(tokenizer), MODEL_NAME, max_queue=max_queue)
