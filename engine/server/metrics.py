"""Prometheus text exposition of the server's metrics, under `kvant:` names that mirror vLLM's `vllm:` ones."""
import bisect
import math
import threading
from collections import Counter
from dataclasses import dataclass, field

from kvant.engine.outputs import EngineStats

# vLLM's bucket bounds (seconds) for the same histograms
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)


@dataclass(slots=True)
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last one is +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self):
        if list(self.bounds) != sorted(self.bounds):
            raise ValueError("bounds must be increasing")
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts):
            running += n
            le = "+Inf" if bound == math.inf else repr(float(bound))
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {running}')
        out.append(f"{name}_sum{{{labels}}} {self.total!r}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out


class ServerMetrics:
    """Request-level timings observed by the server; engine-level gauges and counters come from EngineStats."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self._lock = threading.Lock()
        self.ttft = Histogram(TTFT_BUCKETS)
        self.inter_token = Histogram(TPOT_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.finished = Counter()  # finish_reason -> requests
        self.num_rejected = 0

    def observe_first_token(self, seconds: float) -> None:
        with self._lock:
            self.ttft.observe(seconds)

    def observe_gap(self, seconds: float, num_tokens: int) -> None:
        if num_tokens > 0:
            with self._lock:
                self.inter_token.observe(seconds / num_tokens)

    def observe_finished(self, e2e_s: float, ttft_s: float | None, num_tokens: int, finish_reason: str) -> None:
        with self._lock:
            self.e2e.observe(e2e_s)
            if ttft_s is not None and num_tokens > 1:
                self.tpot.observe((e2e_s - ttft_s) / (num_tokens - 1))
            self.finished[finish_reason] += 1

    def observe_rejected(self) -> None:
        with self._lock:
            self.num_rejected += 1

    def render(self, stats: EngineStats) -> str:
        labels = f'model_name="{_escape(self.model_name)}"'
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[str]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)

        def gauge(name: str, help_text: str, value: float) -> None:
            metric(name, "gauge", help_text, [f"{name}{{{labels}}} {float(value)!r}"])

        def counter(name: str, help_text: str, value: float) -> None:
            metric(name, "counter", help_text, [f"{name}_total{{{labels}}} {float(value)!r}"])

        gauge("kvant:num_requests_running", "Sequences in the engine's running batch.", stats.num_running)
        gauge("kvant:num_requests_waiting", "Sequences waiting to be scheduled.", stats.num_waiting)
        gauge("kvant:kv_cache_usage_perc", "KV-cache usage; 1 means 100 percent.", stats.kv_cache_usage)
        gauge("kvant:prefix_cache_hit_rate", "Cached prompt tokens / prompt tokens looked up.",
              stats.prefix_cache_hit_rate)
        gauge("kvant:num_kv_blocks_free", "Free KV-cache blocks.", stats.num_free_blocks)
        gauge("kvant:num_kv_blocks", "All KV-cache blocks.", stats.num_blocks)
        counter("kvant:prompt_tokens", "Prefilled prompt tokens.", stats.prompt_tokens_total)
        counter("kvant:generation_tokens", "Generated tokens.", stats.generation_tokens_total)
        counter("kvant:num_preemptions", "Preempted sequences.", stats.num_preemptions)
        with self._lock:
            counter("kvant:request_rejected", "Requests refused with 503 because the queue was full.",
                    self.num_rejected)
            metric("kvant:request_success", "counter", "Finished requests by finish reason.",
                   [f'kvant:request_success_total{{{labels},finished_reason="{_escape(reason)}"}} {n}'
                    for reason, n in sorted(self.finished.items())])
            for name, hist, help_text in (
                    ("kvant:time_to_first_token_seconds", self.ttft, "Time to first token."),
                    ("kvant:inter_token_latency_seconds", self.inter_token, "Time between streamed tokens."),
                    ("kvant:request_time_per_output_token_seconds", self.tpot,
                     "Per request: (e2e - ttft) / (output tokens - 1)."),
                    ("kvant:e2e_request_latency_seconds", self.e2e, "Arrival to last token.")):
                metric(name, "histogram", help_text, hist.lines(name, labels))
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
