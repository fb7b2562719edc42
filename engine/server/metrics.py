"""The server's Prometheus metrics through prometheus_client, under `kvant:` names that mirror vLLM's `vllm:` ones.
Request timings are observed as requests finish; engine gauges and counters are read from EngineStats per scrape."""
from collections.abc import Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kvant.engine.outputs import EngineStats

# as vLLM does: no `_created` series beside each counter and histogram
prometheus_client.disable_created_metrics()

# vLLM's bucket bounds (seconds) for the same histograms
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)
# EngineStats field -> (metric name, help); gauges, then counters (exposed with `_total`)
ENGINE_GAUGES = (
    ("num_running", "kvant:num_requests_running", "Sequences in the engine's running batch."),
    ("num_waiting", "kvant:num_requests_waiting", "Sequences waiting to be scheduled."),
    ("kv_cache_usage", "kvant:kv_cache_usage_perc", "KV-cache usage; 1 means 100 percent."),
    ("prefix_cache_hit_rate", "kvant:prefix_cache_hit_rate", "Cached prompt tokens / prompt tokens looked up."),
    ("num_free_blocks", "kvant:num_kv_blocks_free", "Free KV-cache blocks."),
    ("num_blocks", "kvant:num_kv_blocks", "All KV-cache blocks."),
)
ENGINE_COUNTERS = (
    ("prompt_tokens_total", "kvant:prompt_tokens", "Prefilled prompt tokens."),
    ("generation_tokens_total", "kvant:generation_tokens", "Generated tokens."),
    ("num_preemptions", "kvant:num_preemptions", "Preempted sequences."),
)


class _EngineCollector:
    """Reads the EngineStats handed to the latest scrape; prometheus_client calls collect() during rendering."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.stats: EngineStats | None = None

    def collect(self) -> Iterator[Metric]:
        if self.stats is None:
            return
        for field, name, help_text in ENGINE_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=["model_name"])
            family.add_metric([self.model_name], float(getattr(self.stats, field)))
            yield family
        for field, name, help_text in ENGINE_COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=["model_name"])
            family.add_metric([self.model_name], float(getattr(self.stats, field)))
            yield family


class ServerMetrics:
    """One registry per server (tests build several in one process); request-level series live here."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.registry = CollectorRegistry()
        self._engine = _EngineCollector(model_name)
        self.registry.register(self._engine)
        labels = ["model_name"]

        def histogram(name: str, help_text: str, buckets: tuple[float, ...]):
            return Histogram(name, help_text, labels, buckets=buckets, registry=self.registry).labels(model_name)

        self.rejected = Counter("kvant:request_rejected", "Requests refused with 503 because the queue was full.",
                                labels, registry=self.registry).labels(model_name)
        self.success = Counter("kvant:request_success", "Finished requests by finish reason.",
                               [*labels, "finished_reason"], registry=self.registry)
        self.ttft = histogram("kvant:time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS)
        self.inter_token = histogram("kvant:inter_token_latency_seconds", "Time between streamed tokens.",
                                     TPOT_BUCKETS)
        self.tpot = histogram("kvant:request_time_per_output_token_seconds",
                              "Per request: (e2e - ttft) / (output tokens - 1).", TPOT_BUCKETS)
        self.e2e = histogram("kvant:e2e_request_latency_seconds", "Arrival to last token.", E2E_BUCKETS)

    def observe_first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def observe_gap(self, seconds: float, num_tokens: int) -> None:
        if num_tokens > 0:
            self.inter_token.observe(seconds / num_tokens)

    def observe_finished(self, e2e_s: float, ttft_s: float | None, num_tokens: int, finish_reason: str) -> None:
        self.e2e.observe(e2e_s)
        if ttft_s is not None and num_tokens > 1:
            self.tpot.observe((e2e_s - ttft_s) / (num_tokens - 1))
        self.success.labels(self.model_name, finish_reason).inc()

    def observe_rejected(self) -> None:
        self.rejected.inc()

    def render(self, stats: EngineStats) -> str:
        """The Prometheus text format (0.0.4) of every series, with the engine's values from `stats`."""
        self._engine.stats = stats
        return prometheus_client.generate_latest(self.registry).decode("utf-8")
