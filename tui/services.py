"""The headless facade the TUI screens call: it wraps kvant's real APIs and imports no Textual.

Tests swap this one object for a fake (`make_app(services=...)`). Core APIs are imported inside the methods that use
them, so the TUI starts without loading torch.
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

from kvant.engine import registry
from kvant.artifact.errors import KvantError
from kvant.artifact.progress import CancelToken, Progress

SERVER_START_TIMEOUT_S = 180.0
EVAL_DATA_ENV = "KVANT_EVAL_DATA"  # the same variable `kvant eval --data-dir` defaults to


@dataclass(slots=True, frozen=True)
class ModelEntry:
    name: str
    path: Path
    size_bytes: int
    source: str


@dataclass(slots=True, frozen=True)
class RecipeInfo:
    name: str
    path: Path
    description: str
    scheme: str
    calibration_source: str
    num_samples: int | None


@dataclass(slots=True, frozen=True)
class EvalRow:
    task: str
    metric: str
    base: float
    quant: float
    recovery: float
    recovery_stderr: float | None
    passed: bool


@dataclass(slots=True, frozen=True)
class EvalSummary:
    rows: tuple[EvalRow, ...]
    min_recovery: float
    passed: bool
    limit: int | None
    perplexity_ratio: float | None


@dataclass(slots=True, frozen=True)
class ParetoPoint:
    bits_per_weight: float  # average over the Linear weights, scales included
    quality: float | None  # the gate's measure (higher is better); None: not measured
    passed: bool
    chosen: bool


@dataclass(slots=True, frozen=True)
class ParetoSummary:
    """The points an auto (mixed-precision) search validated, from the artifact's kvant.json."""
    points: tuple[ParetoPoint, ...]
    gate: float
    quality_name: str


def parse_pareto(manifest: dict) -> ParetoSummary | None:
    points = ((manifest.get("auto") or {}).get("points")) or []
    if not points:
        return None
    return ParetoSummary(tuple(ParetoPoint(float(p["bits_per_weight"]), p.get("quality"), bool(p.get("passed")),
                                           bool(p.get("chosen"))) for p in points),
                         float(points[0]["gate"]), str(points[0]["quality_name"]))


@dataclass(slots=True, frozen=True)
class ServerStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # fraction of KV blocks in use, [0, 1]
    prefix_cache_hit_rate: float | None
    generation_tokens_total: float
    ttft_s: float | None  # mean over requests so far
    tpot_s: float | None


@dataclass(slots=True, frozen=True)
class PushOutcome:
    dry_run: bool
    url: str | None
    card: str
    files: tuple[str, ...]


@dataclass(slots=True)
class ServerHandle:
    base_url: str
    model_name: str
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None


# ----------------------------------------------------------------------------------------------------------------
def memory_mib() -> float:
    """Resident memory of this process in MiB (peak when /proc is unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recipe_info(path: Path) -> RecipeInfo:
    from kvant.quantize import recipe as recipes

    recipe = recipes.load_recipe(path)
    calib = recipe.calibration
    return RecipeInfo(
        name=path.stem,
        path=path,
        description=" ".join(recipe.description.split()),
        scheme=recipe.scheme,
        calibration_source=calib.dataset if recipe.needs_data else "none",
        num_samples=calib.num_samples if recipe.needs_data else None,
    )


def parse_results(data: dict) -> EvalSummary:
    rows = tuple(
        EvalRow(t["task"], t["metric"], float(t["base"]), float(t["quant"]), float(t["recovery"]),
                None if t.get("recovery_stderr") is None else float(t["recovery_stderr"]), bool(t["passed"]))
        for t in data["tasks"]
    )
    ppl = data.get("perplexity")
    return EvalSummary(rows, float(data["gate"]["min_recovery"]), bool(data["passed"]), data.get("limit"),
                       float(ppl["ratio"]) if ppl else None)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {sample name: value} through prometheus_client's parser; labelled samples are summed."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    except ValueError:  # a malformed line ends the parse; what was read so far still counts
        pass
    return values


def _metric(values: dict[str, float], *suffixes: str) -> float | None:
    for suffix in suffixes:
        for name, value in values.items():
            if name.endswith(suffix):
                return value
    return None


def _mean(values: dict[str, float], *bases: str) -> float | None:
    for base in bases:
        total, count = _metric(values, f"{base}_sum"), _metric(values, f"{base}_count")
        if total is not None and count:
            return total / count
    return None


def stats_from_metrics(values: dict[str, float]) -> ServerStats:
    usage = _metric(values, "kv_cache_usage_perc", "gpu_cache_usage_perc", "kv_cache_usage")
    hits, queries = _metric(values, "prefix_cache_hits_total", "prefix_cache_hits"), _metric(
        values, "prefix_cache_queries_total", "prefix_cache_queries")
    hit_rate = _metric(values, "prefix_cache_hit_rate")
    if hit_rate is None and hits is not None and queries:
        hit_rate = hits / queries
    return ServerStats(
        num_running=int(_metric(values, "num_requests_running") or 0),
        num_waiting=int(_metric(values, "num_requests_waiting") or 0),
        kv_cache_usage=float(usage or 0.0),
        prefix_cache_hit_rate=hit_rate,
        generation_tokens_total=float(_metric(values, "generation_tokens_total") or 0.0),
        ttft_s=_mean(values, "time_to_first_token_seconds"),
        tpot_s=_mean(values, "time_per_output_token_seconds", "inter_token_latency_seconds"),
    )


# ----------------------------------------------------------------------------------------------------------------
class Services:
    def default_model(self) -> str:
        return registry.DEFAULT_MODEL

    def artifacts_dir(self) -> Path:
        return registry.kvant_home() / "artifacts"

    def memory_mib(self) -> float:
        return memory_mib()

    def now(self) -> float:
        return time.monotonic()

    def list_models(self) -> list[ModelEntry]:
        return [ModelEntry(m.name, m.path, m.size_bytes, m.source) for m in registry.list_cached()]

    def list_artifacts(self) -> list:
        """The artifacts under artifacts_dir(), as `kvant models list` shows them (hashes every file: call it from a
        worker)."""
        from kvant.eval.inventory import list_artifacts

        return list_artifacts(self.artifacts_dir())

    def pull_default(self, progress: Progress, cancel: CancelToken) -> Path:
        return registry.pull_default(progress=progress, cancel=cancel)

    def resolve_model(self, name: str) -> Path:
        return registry.resolve_model(name)

    def recipe_info(self, path: Path) -> RecipeInfo:
        return recipe_info(path)

    def list_recipes(self) -> list[RecipeInfo]:
        from kvant.quantize.recipe import RECIPES_DIR

        return [recipe_info(p) for p in sorted(RECIPES_DIR.glob("*.yaml"))]

    def quantize(self, model: str, recipe: RecipeInfo, out: Path, num_samples: int | None, seq_len: int | None,
                 progress: Progress, cancel: CancelToken, force: bool = False) -> Path:
        from kvant.quantize import api
        from kvant.quantize import recipe as recipes

        chosen = recipes.load_recipe(recipe.path).with_calibration(num_samples=num_samples, seq_len=seq_len)
        return api.quantize(model, chosen, out, force=force, progress=progress, cancel=cancel)

    def read_eval(self, artifact: Path) -> EvalSummary | None:
        path = artifact / "eval" / "results.json"
        return parse_results(json.loads(path.read_text())) if path.exists() else None

    def read_pareto(self, artifact: Path) -> ParetoSummary | None:
        # the auto search's validated points; None for an artifact of one scheme
        path = artifact / "kvant.json"
        return parse_pareto(json.loads(path.read_text())) if path.exists() else None

    def eval_data_dir(self) -> Path | None:
        value = os.environ.get(EVAL_DATA_ENV)
        return Path(value) if value else None

    def default_eval_tasks(self, data_dir: Path | None) -> list[str]:
        # two quick multiple-choice tasks: kvant's local copies when a data folder is given, lm-eval's otherwise
        return ["kvant_arc_easy", "kvant_hellaswag"] if data_dir else ["arc_easy", "hellaswag"]

    def evaluate(self, artifact: Path, tasks: list[str], limit: int | None, data_dir: Path | None, generative: bool,
                 progress: Progress, cancel: CancelToken) -> EvalSummary:
        from kvant.eval import runner
        from kvant.eval.generative import GenerativeConfig

        options = runner.EvalOptions(tasks=tuple(tasks), limit=limit, data_dir=data_dir,
                                     generative=GenerativeConfig() if generative else None)
        runner.evaluate_artifact(artifact, options=options, progress=progress, cancel=cancel)
        summary = self.read_eval(artifact)
        if summary is None:
            raise KvantError(f"evaluation finished but wrote no {artifact / 'eval' / 'results.json'}")
        return summary

    def start_server(self, artifact: Path, port: int, cancel: CancelToken) -> ServerHandle:
        from kvant.engine.server.client import free_port

        port = port or free_port()
        log = Path(tempfile.mkstemp(prefix="kvant-serve-", suffix=".log")[1])
        # -P: never the current directory on sys.path, where a checkout's kernels/ would shadow HF's `kernels`
        cmd = [sys.executable, "-P", "-m", "kvant.tui.cli", "serve", str(artifact), "--host", "127.0.0.1",
               "--port", str(port), "--served-model-name", artifact.name]
        with open(log, "wb") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=os.environ.copy())
        handle = ServerHandle(f"http://127.0.0.1:{port}", artifact.name, proc, log)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if cancel.cancelled:
                self.stop_server(handle)
                cancel.raise_if_cancelled("server start")
            if not handle.alive():
                lines = log.read_text(errors="replace").strip().splitlines() or ["no output"]
                log.unlink(missing_ok=True)
                raise KvantError(f"kvant serve exited with code {proc.returncode}: {lines[-1]}")
            try:
                if httpx.get(f"{handle.base_url}/health", timeout=1.0).status_code == 200:
                    return handle
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop_server(handle)
        raise KvantError(f"kvant serve did not answer on {handle.base_url}/health within {SERVER_START_TIMEOUT_S:.0f} s")

    def stop_server(self, handle: ServerHandle) -> None:
        if handle.alive():
            handle.process.terminate()
            try:
                handle.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                handle.process.kill()
                handle.process.wait()
        handle.log_path.unlink(missing_ok=True)

    def server_stats(self, handle: ServerHandle) -> ServerStats:
        try:
            response = httpx.get(f"{handle.base_url}/metrics", timeout=2.0)
        except httpx.HTTPError as exc:
            raise KvantError(f"cannot read {handle.base_url}/metrics: {exc}") from exc
        return stats_from_metrics(parse_metrics(response.text))

    def chat_stream(self, handle: ServerHandle, messages: list[dict], temperature: float, max_tokens: int,
                    cancel: CancelToken) -> Iterator[str]:
        from kvant.engine.server.client import chat_deltas, sse_chunks

        body = {"model": handle.model_name, "messages": messages, "temperature": temperature,
                "max_tokens": max_tokens, "stream": True}
        try:
            with httpx.stream("POST", f"{handle.base_url}/v1/chat/completions", json=body, timeout=120.0) as r:
                if r.status_code != 200:
                    r.read()
                    raise KvantError(f"chat request failed ({r.status_code}): {r.text[:200]}")
                for delta in chat_deltas(sse_chunks(r.iter_lines())):
                    if cancel.cancelled:  # the reply so far stands; closing the stream aborts the request
                        return
                    yield delta
        except httpx.HTTPError as exc:
            raise KvantError(f"chat request to {handle.base_url} failed: {exc}") from exc

    def push(self, artifact: Path, repo_id: str, private: bool, dry_run: bool, force: bool, progress: Progress,
             cancel: CancelToken) -> PushOutcome:
        from kvant.quantize.hub.push import push

        result = push(artifact, repo_id, private=private, dry_run=dry_run, force=force,
                      progress=progress, cancel=cancel)
        url = None if result.dry_run else f"{result.endpoint}/{result.repo_id}"
        return PushOutcome(result.dry_run, url, result.card, tuple(path for path, _ in result.files))
