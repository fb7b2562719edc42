"""`kvant demo`: the default model through the whole pipeline (pull, quantize with the auto recipe, validate against
the base, serve, one streamed chat request), then a summary table."""
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kvant.artifact.errors import KvantError
from kvant.tui.commands.eval import DATA_ENV

# mixed precision chosen per layer to pass the gate (recipes/auto.yaml); a single-scheme recipe is quantized as is
DEFAULT_RECIPE = "auto"
# 8 builtin samples x 128 tokens: about 30 s per quantized point on two CPU cores (the recipe's 16 x 256 takes longer)
DEFAULT_NUM_SAMPLES = 8
DEFAULT_SEQ_LEN = 128
# with a data folder: two short-context tasks, the first --limit items of each (a wikitext page runs to thousands of
# tokens, minutes per model on a CPU)
DATA_TASKS = ("kvant_arc_easy", "kvant_lambada_openai")
DEFAULT_LIMIT = 25
# greedy tokens per prompt of the generative check (kvant eval's 64 doubles the quantized model's decode steps)
GENERATIVE_TOKENS = 32
QUESTION = "What is the capital of France?"
DEFAULT_MAX_TOKENS = 48
SERVER_START_TIMEOUT_S = 300


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="pull, quantize (auto mixed precision), validate, serve and query the default model in one go",
        description="Run the whole pipeline on the default model: pull it, quantize it with the auto recipe (INT4 "
                    "where the layers allow, more bits where they need them, each point tried validated against the "
                    "gate; GPTQ on a small builtin calibration set), validate the artifact against the base model, "
                    "serve it on "
                    "127.0.0.1, stream one chat answer, shut the server down and print a summary. With a data "
                    f"folder (--data-dir or ${DATA_ENV}) validation runs local lm-eval tasks; without one it uses "
                    "only what ships with kvant: perplexity on builtin text held out from calibration and the "
                    "generative agreement check.")
    p.add_argument("--recipe", default=DEFAULT_RECIPE,
                   help=f"shipped recipe name or recipe YAML (default: {DEFAULT_RECIPE})")
    p.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES,
                   help=f"calibration samples (default: {DEFAULT_NUM_SAMPLES})")
    p.add_argument("--seq-len", type=int, default=DEFAULT_SEQ_LEN,
                   help=f"tokens per calibration sample (default: {DEFAULT_SEQ_LEN})")
    p.add_argument("--out", help="artifact folder (default: $KVANT_HOME/artifacts/<model>-<recipe>-<N>x<L>); a valid "
                                 "artifact already there from the same model and recipe is reused")
    p.add_argument("--force", action="store_true", help="quantize again even if --out holds an artifact")
    p.add_argument("--data-dir", default=os.environ.get(DATA_ENV) or None,
                   help=f"local evaluation data folder (default: ${DATA_ENV}; none: the offline check)")
    p.add_argument("--tasks", help="comma-separated lm-eval tasks (default with a data folder: "
                                   f"{','.join(DATA_TASKS)})")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"items per task (default: {DEFAULT_LIMIT})")
    p.add_argument("--port", type=int, default=0, help="server port on 127.0.0.1 (default: a free one)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                   help=f"longest chat answer in tokens (default: {DEFAULT_MAX_TOKENS})")
    p.set_defaults(func=run)


# ---- results


@dataclass(slots=True)
class ChatResult:
    answer: str
    ttft_s: float
    num_tokens: int
    tokens_per_s: float | None  # decode rate after the first token; None for a one-token answer


@dataclass(slots=True)
class ServeResult:
    url: str
    ready_s: float
    chat: ChatResult
    port_closed: bool


@dataclass(slots=True)
class Summary:
    model: str
    base_path: Path
    base_bytes: int
    artifact: Path
    artifact_bytes: int
    recipe: str
    reused: bool
    quantize_s: float
    validation: str  # what the validation ran on
    report: object  # kvant.eval.report.EvalReport
    serve: ServeResult
    total_s: float


def folder_bytes(folder: Path) -> int:
    # the weights and configs a user would download: eval/ output left out so the two sizes compare like for like
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] != "eval")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- step 2: quantize, or reuse what is already there


def check_reusable(out: Path, recipe, base_path: Path) -> dict:
    """The manifest of a complete artifact in `out` made from base_path with this exact recipe; KvantError if not."""
    from kvant.artifact import manifest

    manifest.verify(out)
    m = manifest.read(out)
    hint = "pass --force to quantize again, or --out for another folder"
    stored = dict(m.get("recipe") or {})
    if recipe.is_auto:  # the search's answer is part of the stored recipe, not of the one asked for
        stored.pop("layer_schemes", None)
    if stored != recipe.to_dict():
        raise KvantError(f"{out} holds an artifact from another recipe or calibration size: {hint}")
    if Path(m.get("base_model", {}).get("path", "")).resolve() != Path(base_path).resolve():
        raise KvantError(f"{out} holds an artifact of another base model: {hint}")
    return m


def quantize_or_reuse(model: str, recipe, out: Path, base_path: Path, force: bool) -> tuple[bool, float]:
    from kvant.quantize.api import quantize

    if out.exists() and not force:
        m = check_reusable(out, recipe, base_path)
        _say(f"reusing the artifact in {out} (created {m.get('created')}; --force quantizes again)")
        return True, float(m["calibration"].get("time_s") or 0.0)
    started = time.monotonic()

    def progress(stage: str, done: int, total: int, message: str) -> None:
        if stage in ("load", "calibrate"):
            _say(f"  {message}")

    quantize(model, recipe, out, force=force, progress=progress)
    return False, time.monotonic() - started


def quantize_auto_validated(recipe, out: Path, base_path: Path, options, force: bool):
    """The auto search, each point validated as step 3 validates: (the chosen point's EvalReport, seconds)."""
    from kvant.engine.registry import DEFAULT_MODEL
    from kvant.eval.auto import quantize_auto
    from kvant.eval.runner import evaluate_artifact

    reports = {}

    def validate(folder: Path):
        _say(f"  validating a point ({_bits(folder):.2f} bits per weight)")
        report = evaluate_artifact(folder, options=options) if options else validate_offline(folder, base_path)
        reports[folder.name] = report
        _say(f"  gate {'PASS' if report.passed else 'FAIL'}")
        return report

    def progress(stage: str, done: int, total: int, message: str) -> None:
        if total == 0 and stage in ("load", "calibrate", "sensitivity", "trial"):
            _say(f"  {message}")

    started = time.monotonic()
    result = quantize_auto(DEFAULT_MODEL, recipe, out, validate, force=force, progress=progress)
    return reports[result.chosen["folder"]], time.monotonic() - started


def _bits(folder: Path) -> float:
    from kvant.artifact import manifest

    return float(manifest.read(folder).get("bits_per_weight") or 0.0)


# ---- step 3 without a data folder: kvant.eval's offline check


def validate_offline(artifact: Path, base_path: Path):
    from kvant.eval.generative import GenerativeConfig
    from kvant.eval.offline import evaluate_offline

    def progress(stage: str, done: int, total: int, message: str) -> None:
        if stage != "done":
            _say(f"  {message}")

    return evaluate_offline(artifact, base_path, generative=GenerativeConfig(max_tokens=GENERATIVE_TOKENS),
                            progress=progress)


# ---- step 4: serve in-process, one streamed chat request, shut down


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) != 0


def stream_chat(base_url: str, model_name: str, question: str, max_tokens: int) -> ChatResult:
    import httpx

    from kvant.engine.server.client import chat_deltas, sse_chunks

    body = {"model": model_name, "messages": [{"role": "user", "content": question}], "temperature": 0.0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    parts, usage, first = [], None, None
    started = time.perf_counter()
    try:
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=300.0) as r:
            if r.status_code != 200:
                r.read()
                raise KvantError(f"chat request failed with HTTP {r.status_code}: {r.text[:200]}")
            for chunk in sse_chunks(r.iter_lines()):
                usage = chunk.get("usage") or usage
                for text in chat_deltas([chunk]):
                    first = first or time.perf_counter()
                    parts.append(text)
    except httpx.HTTPError as exc:
        raise KvantError(f"chat request to {base_url} failed: {exc}") from exc
    ended = time.perf_counter()
    if first is None or usage is None:
        raise KvantError("the chat answer came back empty")
    n = int(usage["completion_tokens"])
    rate = (n - 1) / (ended - first) if n > 1 and ended > first else None
    return ChatResult("".join(parts).strip(), first - started, n, rate)


def serve_and_chat(artifact: Path, port: int, question: str, max_tokens: int) -> ServeResult:
    import asyncio

    import httpx
    import uvicorn

    from kvant.engine.async_llm import AsyncLLM
    from kvant.engine.server import build_app
    from kvant.engine.server.client import free_port

    port = port or free_port()
    if not port_is_free(port):
        raise KvantError(f"port {port} on 127.0.0.1 is in use: pass another --port, or none for a free one")
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    engine = AsyncLLM(str(artifact))
    app = build_app(engine, artifact.name, shutdown_engine=True)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           access_log=False, timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, name="kvant-demo-server", daemon=True)
    thread.start()
    try:
        deadline = started + SERVER_START_TIMEOUT_S
        while True:
            if not thread.is_alive():
                raise KvantError(f"the server did not start on 127.0.0.1:{port} (is the port free?)")
            if time.monotonic() > deadline:
                raise KvantError(f"the server did not answer {url}/health within {SERVER_START_TIMEOUT_S} s")
            try:
                if server.started and httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        ready_s = time.monotonic() - started
        _say(f"  serving {artifact.name} at {url}/v1 (ready in {ready_s:.1f} s); asking: {question}")
        chat = stream_chat(url, artifact.name, question, max_tokens)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        if not server.started:  # the app's lifespan never ran, so the engine is still ours to stop
            asyncio.run(engine.shutdown())
    return ServeResult(url, ready_s, chat, port_is_closed(port))


# ---- the pipeline and its summary


def default_out(model: str, recipe: str, num_samples: int, seq_len: int) -> Path:
    from kvant.engine.registry import kvant_home

    return kvant_home() / "artifacts" / f"{model}-{Path(recipe).stem}-{num_samples}x{seq_len}"


def _quiet_libraries() -> None:
    # the demo prints its own steps: lm-eval's per-task notices and the libraries' progress bars would bury them
    import logging

    import datasets
    from transformers.utils import logging as hf_logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def run(args) -> int:
    from kvant.engine.registry import DEFAULT_MODEL, pull_default
    from kvant.eval.generative import GenerativeConfig
    from kvant.eval import offline
    from kvant.eval.runner import EvalOptions, evaluate_artifact, plan_tasks
    from kvant.quantize.recipe import load_recipe

    started = time.monotonic()
    # every argument is checked before any model is loaded
    if args.max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {args.max_tokens}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {args.port}")
    if args.port and not port_is_free(args.port):
        raise KvantError(f"port {args.port} on 127.0.0.1 is in use: pass another --port, or none for a free one")
    recipe = load_recipe(args.recipe).with_calibration(num_samples=args.num_samples, seq_len=args.seq_len)
    data_dir = Path(args.data_dir) if args.data_dir else None
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else None
    options = None
    if data_dir or tasks:
        options = EvalOptions(tasks=tasks or DATA_TASKS, limit=args.limit, data_dir=data_dir,
                              generative=GenerativeConfig(max_tokens=GENERATIVE_TOKENS))
        plan_tasks(options.tasks, options.data_dir)
    elif args.limit < 1:
        raise ValueError(f"limit must be >= 1, got {args.limit}")
    _quiet_libraries()
    out = Path(args.out) if args.out else default_out(DEFAULT_MODEL, args.recipe, args.num_samples, args.seq_len)

    stage = StageClock()
    _say(f"[1/4] pulling {DEFAULT_MODEL}")
    base_path = pull_default(progress=lambda stage, done, total, message: _say(f"  {message}"))
    stage.done("pull")
    _say(f"[2/4] quantizing with {args.recipe} ({args.num_samples} samples x {args.seq_len} tokens) into {out}")
    report = None
    if recipe.is_auto and (args.force or not out.exists()):
        report, quantize_s = quantize_auto_validated(recipe, out, base_path, options, args.force)
        reused = False
    else:
        reused, quantize_s = quantize_or_reuse(DEFAULT_MODEL, recipe, out, base_path, args.force)
    stage.done("quantize")
    if report is not None:
        validation = ("lm-eval tasks " + ", ".join(options.tasks) + f" (first {options.limit} items)" if options
                      else f"offline: {offline.NUM_HELDOUT} builtin paragraphs held out from calibration")
        _say("[3/4] validated during the search (the chosen point's report)")
    elif options is not None:
        validation = f"lm-eval tasks {', '.join(options.tasks)} (first {options.limit} items"
        validation += f", data {data_dir})" if data_dir else ")"
        _say(f"[3/4] validating against the base: {validation} and the generative check")
        report = evaluate_artifact(out, options=options)
    else:
        validation = f"offline: {offline.NUM_HELDOUT} builtin paragraphs held out from calibration"
        _say(f"[3/4] validating against the base: {validation}, and the generative check")
        report = validate_offline(out, base_path)
    stage.done("validate")
    _say("[4/4] serving the artifact")
    served = serve_and_chat(out, args.port, QUESTION, args.max_tokens)
    stage.done("serve and chat")
    summary = Summary(DEFAULT_MODEL, base_path, folder_bytes(base_path), out, folder_bytes(out), args.recipe, reused,
                      quantize_s, validation, report, served, time.monotonic() - started)
    print(format_summary(summary))
    if not report.passed:
        _say(f"gate FAILED: the artifact in {out} does not meet its quality gate (see {out / 'eval' / 'report.md'}); "
             "do not ship it")
        return 1
    return 0


class StageClock:
    """Prints each stage's wall time as it ends (the demo's promise is checked stage by stage), with the CPU time
    this process's threads spent in it and the load average: on a shared machine the wall time alone says little."""

    def __init__(self):
        self.last, self.last_cpu = time.monotonic(), time.process_time()

    def done(self, name: str) -> None:
        now, cpu = time.monotonic(), time.process_time()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        _say(f"  {name} took {now - self.last:.1f} s (CPU {cpu - self.last_cpu:.1f} s, load average {load:.1f})")
        self.last, self.last_cpu = now, cpu


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_summary(s: Summary) -> str:
    from kvant.eval.report import short_task_name

    report, chat = s.report, s.serve.chat
    quantized = f"reused (quantized earlier in {s.quantize_s:.1f} s)" if s.reused else f"{s.quantize_s:.1f} s"
    rows = [
        ("model", f"{s.model} ({s.base_path})"),
        ("artifact", f"{s.artifact} ({s.recipe})"),
        ("size", f"{_mib(s.artifact_bytes)} vs base {_mib(s.base_bytes)} ({s.artifact_bytes / s.base_bytes:.2f}x)"),
        ("quantize time", quantized),
        ("validation", s.validation),
    ]
    for t in report.tasks:
        rows.append((short_task_name(t.task), f"{t.metric} base {t.base:.4f}, quantized {t.quant:.4f}, recovery "
                                              f"{_pct(t.recovery)} (gate >= {_pct(report.gate.min_recovery)}: "
                                              f"{'pass' if t.passed else 'FAIL'})"))
    if report.perplexity:
        p = report.perplexity
        rows.append((short_task_name(p.task), f"word perplexity base {p.base:.3f}, quantized {p.quant:.3f}, "
                                              f"ratio {p.ratio:.4f} (not gated)"))
    if report.generative:
        g = report.generative
        rows.append(("generative", f"{g['num_prompts']} prompts: perplexity ratio {g['ppl_ratio']:.4f} (gate <= "
                                   f"{g['max_ppl_ratio']}: {'pass' if g['passed'] else 'FAIL'}), token agreement "
                                   f"{_pct(g['token_agreement'])}"))
    rows += [
        ("gate", f"{'PASS' if report.passed else 'FAIL'} (eval/results.json in the artifact)"),
        ("server ready", f"{s.serve.ready_s:.1f} s at {s.serve.url}/v1, shut down "
                         f"({'port closed' if s.serve.port_closed else 'PORT STILL OPEN'})"),
        ("question", QUESTION),
        ("answer", " ".join(chat.answer.split())),
        ("TTFT", f"{chat.ttft_s * 1000:.0f} ms"),
        ("tokens/s", f"{chat.tokens_per_s:.1f} ({chat.num_tokens} tokens)" if chat.tokens_per_s else
                     f"n/a ({chat.num_tokens} token)"),
        ("total time", f"{s.total_s:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'step'.ljust(width)} | result |", f"|{'-' * (width + 2)}|---|"]
    lines += [f"| {k.ljust(width)} | {v.replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)
