"""`kvant bench serve`: drive a running OpenAI-compatible server with a seeded token-id workload, either with Poisson
arrivals at a request rate or at a fixed concurrency, and report vLLM's serving metrics: TTFT (time to the first
streamed token), TPOT ((E2E - TTFT) / (output tokens - 1)), ITL (gaps between streamed chunks), E2E latency, their
mean/p50/p90/p99, throughput, and goodput (requests per second that met every SLO given)."""
import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field

from kvant.bench.workloads import Request
from kvant.artifact.errors import KvantError, NetworkError


@dataclass(slots=True)
class Outcome:
    ok: bool
    prompt_tokens: int
    output_tokens: int = 0
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def tpot(self) -> float | None:
        return (self.e2e - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else None


async def _one(client, url: str, headers: dict, model: str, req: Request) -> Outcome:
    body = {"model": model, "prompt": req.prompt_token_ids, "max_tokens": req.max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    out = Outcome(ok=False, prompt_tokens=len(req.prompt_token_ids))
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            if resp.status_code != 200:
                out.error = f"HTTP {resp.status_code}: {(await resp.aread()).decode(errors='replace')[:200]}"
                return out
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                now = time.perf_counter()
                if chunk.get("choices"):
                    if out.ttft == 0.0:
                        out.ttft = now - start
                    else:
                        out.itl.append(now - last)
                    last = now
                if chunk.get("usage"):
                    out.output_tokens = chunk["usage"]["completion_tokens"]
        out.e2e = time.perf_counter() - start
        out.ok = out.output_tokens == req.max_tokens
        if not out.ok:
            out.error = f"got {out.output_tokens} tokens, asked for {req.max_tokens}"
    except Exception as exc:  # noqa: BLE001 - a failed request is counted, not fatal to the run
        out.error = f"{type(exc).__name__}: {exc}"
    return out


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean_ms": None, "p50_ms": None, "p90_ms": None, "p99_ms": None}
    xs = sorted(values)

    def pct(p: float) -> float:
        return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1e3, 2)

    return {"mean_ms": round(statistics.fmean(xs) * 1e3, 2), "p50_ms": pct(0.5), "p90_ms": pct(0.9),
            "p99_ms": pct(0.99)}


async def run_load(base_url: str, reqs: list[Request], *, model: str | None = None, request_rate: float = float("inf"),
                   max_concurrency: int | None = None, api_key: str | None = None, seed: int = 0,
                   slo_ttft_ms: float | None = None, slo_tpot_ms: float | None = None) -> dict:
    import httpx

    if not reqs:
        raise KvantError("the workload has no requests")
    if request_rate <= 0:
        raise ValueError(f"request_rate must be > 0, got {request_rate}")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base = base_url.rstrip("/")
    timeout = httpx.Timeout(None, connect=10)
    limits = httpx.Limits(max_connections=max_concurrency or len(reqs))
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        try:
            listed = (await client.get(f"{base}/v1/models", headers=headers)).json()
        except httpx.HTTPError as exc:
            raise NetworkError(f"cannot reach a server at {base_url}: {exc}") from None
        if model is None:
            if not listed.get("data"):
                raise KvantError(f"{base_url}/v1/models lists no model")
            model = listed["data"][0]["id"]
        gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        rng = random.Random(seed)

        async def guarded(req: Request) -> Outcome:
            if gate is None:
                return await _one(client, f"{base}/v1/completions", headers, model, req)
            async with gate:
                return await _one(client, f"{base}/v1/completions", headers, model, req)

        tasks = []
        started = time.perf_counter()
        for req in reqs:
            tasks.append(asyncio.create_task(guarded(req)))
            if request_rate != float("inf"):
                await asyncio.sleep(rng.expovariate(request_rate))  # Poisson arrivals
        outcomes = await asyncio.gather(*tasks)
        duration = time.perf_counter() - started
    good = [o for o in outcomes if o.ok]
    meets = [o for o in good if (slo_ttft_ms is None or o.ttft * 1e3 <= slo_ttft_ms)
             and (slo_tpot_ms is None or o.tpot is None or o.tpot * 1e3 <= slo_tpot_ms)]
    out_tokens = sum(o.output_tokens for o in good)
    return {
        "model": model, "requests": len(reqs), "completed": len(good), "failed": len(reqs) - len(good),
        "errors": sorted({o.error for o in outcomes if o.error})[:5],
        "duration_s": round(duration, 3), "request_rate": request_rate, "max_concurrency": max_concurrency,
        "output_tokens": out_tokens, "prompt_tokens": sum(o.prompt_tokens for o in good),
        "request_throughput": round(len(good) / duration, 3), "output_tok_per_s": round(out_tokens / duration, 1),
        "goodput_req_per_s": round(len(meets) / duration, 3) if (slo_ttft_ms or slo_tpot_ms) else None,
        "ttft": _stats([o.ttft for o in good]), "tpot": _stats([o.tpot for o in good if o.tpot is not None]),
        "itl": _stats([x for o in good for x in o.itl]), "e2e": _stats([o.e2e for o in good]),
    }
