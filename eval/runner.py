"""`kvant eval`'s pipeline: check inputs, evaluate artifact then base (base results cached per base model), run the
generative check, write the report and refresh the manifest."""
import gc
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kvant.artifact import manifest as M
from kvant.artifact.errors import DataMissing, KvantError
from kvant.artifact.gate import gate_for
from kvant.artifact.progress import CancelToken, Progress
from kvant.engine.integrity import verify_artifact
from kvant.eval.artifact import check_same_model
from kvant.eval.binding import bind_results
from kvant.eval.data import CONVERTERS, LOCAL_PREFIX, LOCAL_TASKS, prepare_tasks
from kvant.eval.generative import GenerativeConfig
from kvant.eval.report import EvalReport, build_report, write_report

DEFAULT_LOCAL_TASKS = ("kvant_arc_easy", "kvant_arc_challenge", "kvant_hellaswag", "kvant_piqa", "kvant_winogrande",
                       "kvant_lambada_openai", "kvant_wikitext")
DEFAULT_HUB_TASKS = tuple(t.removeprefix(LOCAL_PREFIX) for t in DEFAULT_LOCAL_TASKS)
BOOTSTRAP_ITERS = 1000  # lm-eval's bootstrap stderr (lambada perplexity); its default 100000 takes minutes on CPU


@dataclass(slots=True, frozen=True)
class EvalOptions:
    tasks: tuple[str, ...] | None = None  # None: DEFAULT_LOCAL_TASKS with data_dir, else DEFAULT_HUB_TASKS
    limit: int | None = None
    data_dir: Path | None = None
    batch_size: int | str = "auto"
    generative: GenerativeConfig | None = field(default_factory=GenerativeConfig)
    use_cache: bool = True
    engine_kwargs: dict = field(default_factory=dict)
    # lm-eval's options: simple_evaluate keywords (num_fewshot, apply_chat_template, *_seed), part of the cache key
    lm_eval_kwargs: dict = field(default_factory=dict)
    output_path: Path | None = None  # lm-eval's results layout under this folder
    log_samples: bool = False
    verify: bool = True  # False: --no-verify (warned about by the loader)

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.tasks is not None and not self.tasks:
            raise ValueError("tasks must name at least one task")
        if not (str(self.batch_size) == "auto" or (str(self.batch_size).isdigit() and int(self.batch_size) > 0)):
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {self.batch_size!r}")
        if self.log_samples and self.output_path is None:
            raise ValueError("log_samples needs output_path (lm-eval's rule: samples are written beside results)")
        fewshot = self.lm_eval_kwargs.get("num_fewshot")
        if fewshot is not None and (not isinstance(fewshot, int) or fewshot < 0):
            raise ValueError(f"num_fewshot must be an integer >= 0, got {fewshot!r}")


@dataclass(slots=True, frozen=True)
class TaskPlan:
    names: tuple[str, ...]
    include_path: Path | None
    task_manager: object = field(compare=False)


def eval_home() -> Path:
    from kvant.engine.registry import kvant_home

    return kvant_home() / "eval"


def plan_tasks(tasks: tuple[str, ...] | None, data_dir: Path | None) -> TaskPlan:
    from lm_eval.tasks import TaskManager

    if tasks is None:
        tasks = DEFAULT_LOCAL_TASKS if data_dir else DEFAULT_HUB_TASKS
    names = []
    for name in tasks:
        # with local data, a standard name that kvant mirrors runs on the local copy (the Hub may be unreachable)
        if data_dir and LOCAL_PREFIX + name in LOCAL_TASKS:
            name = LOCAL_PREFIX + name
        if name in LOCAL_TASKS and not data_dir:
            raise DataMissing(f"task {name} reads local data: pass --data-dir (a folder laid out like shared/data)")
        names.append(name)
    local = tuple(n.removeprefix(LOCAL_PREFIX) for n in names if n in LOCAL_TASKS)
    include = prepare_tasks(Path(data_dir), eval_home() / "data", local) if local else None
    tm = TaskManager(include_path=str(include) if include else None)
    unknown = [n for n in names if n not in tm.all_tasks]
    if unknown:
        raise KvantError(f"unknown task {', '.join(unknown)}: use a kvant local task "
                         f"({', '.join(LOCAL_PREFIX + c for c in CONVERTERS)}) or an lm-eval task name")
    return TaskPlan(tuple(dict.fromkeys(names)), include, tm)


def _model_fingerprint(path: Path) -> str:
    h = hashlib.sha256(str(Path(path).resolve()).encode())
    for f in sorted(Path(path).glob("*")):
        if f.is_file() and (f.suffix in (".safetensors", ".json") or f.name.startswith("tokenizer")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _cache_file(model: Path, task: str, plan: TaskPlan, limit: int | None, extra: dict | None = None) -> Path:
    import lm_eval

    data = plan.include_path.parent.name if (plan.include_path and task in LOCAL_TASKS) else "hub"
    parts = [_model_fingerprint(model), task, limit, data, lm_eval.__version__]
    if extra:  # few-shot count, chat template and seeds change the numbers
        parts.append(sorted(extra.items()))
    key = json.dumps(parts)
    return eval_home() / "base-cache" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def run_tasks(lm, plan: TaskPlan, names: tuple[str, ...], limit: int | None,
              options: "EvalOptions | None" = None) -> dict[str, dict]:
    from lm_eval.evaluator import simple_evaluate

    extra = dict(options.lm_eval_kwargs) if options is not None else {}
    output_path = options.output_path if options is not None else None
    tracker = None
    if output_path is not None:  # lm-eval's --output-path, written by lm-eval's own tracker
        from kvant.eval import lm_eval_output

        tracker = lm_eval_output.new_tracker(output_path)
    log_samples = bool(options is not None and options.log_samples)
    out = simple_evaluate(model=lm, tasks=list(names), limit=limit, task_manager=plan.task_manager,
                          bootstrap_iters=BOOTSTRAP_ITERS, log_samples=log_samples, evaluation_tracker=tracker,
                          **extra)
    if tracker is not None:
        template = lm.chat_template(True) if extra.get("apply_chat_template") else None
        lm_eval_output.save(tracker, out, log_samples, lm.pretrained, template)
    return {name: out["results"][name] for name in names}


def _release(lm) -> None:
    lm.llm = None
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _progress_for(progress: Progress | None, who: str) -> Progress | None:
    # the model's requests counted under its own stage, "artifact" or "base"
    if progress is None:
        return None
    return lambda phase, done, total, message: progress(who, done, total, f"{who}: {message}")


def evaluate_artifact(artifact_dir: Path, base: str | None = None, options: EvalOptions = EvalOptions(),
                      progress: Progress | None = None, llm_factory: Callable[[Path], object] | None = None,
                      cancel: CancelToken | None = None) -> EvalReport:
    """llm_factory(model_path) builds the engine for a model (default: kvant.engine.LLM with options.engine_kwargs)."""
    import lm_eval

    from kvant.engine.registry import resolve_model
    from kvant.eval import generative as gen
    from kvant.eval.lm import KvantLM

    # all input checks first: no model is loaded before they pass
    cancel = cancel or CancelToken()
    artifact_dir = Path(artifact_dir)
    manifest = M.read(artifact_dir)
    if options.verify:
        verify_artifact(artifact_dir)  # first: the scores must belong to the bytes the manifest lists
    gate = gate_for(manifest)
    base_path = resolve_model(base or M.base_reference(manifest))
    check_same_model(base_path, artifact_dir)
    plan = plan_tasks(options.tasks, options.data_dir)

    def make_lm(path: Path, who: str) -> KvantLM:
        llm = llm_factory(path) if llm_factory is not None else None
        return KvantLM(pretrained=path, batch_size=options.batch_size, progress=_progress_for(progress, who),
                       llm=llm, cancel=cancel, **options.engine_kwargs)

    quant_lm = make_lm(artifact_dir, "artifact")
    quant_results = run_tasks(quant_lm, plan, plan.names, options.limit, options)
    prompt_ids, quant_tokens = None, None
    if options.generative is not None:
        prompt_ids, quant_tokens = gen.quant_answers(quant_lm.llm, quant_lm.tokenizer, options.generative)
    _release(quant_lm)

    base_results, missing = {}, []
    for name in plan.names:
        cached = _cache_file(base_path, name, plan, options.limit, options.lm_eval_kwargs)
        if options.use_cache and cached.is_file():
            base_results[name] = json.loads(cached.read_text(encoding="utf-8"))
        else:
            missing.append(name)
    generative = None
    if missing or options.generative is not None:
        base_lm = make_lm(base_path, "base")
        if missing:
            fresh = run_tasks(base_lm, plan, tuple(missing), options.limit, options)
            for name, result in fresh.items():
                cached = _cache_file(base_path, name, plan, options.limit, options.lm_eval_kwargs)
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(result, default=str), encoding="utf-8")
            base_results.update(fresh)
        if options.generative is not None:
            generative = gen.score_against_base(base_lm.llm, prompt_ids, quant_tokens, options.generative)
        _release(base_lm)

    cancel.raise_if_cancelled("evaluation")  # before anything is written: the artifact keeps its old report
    report = build_report(base_results, quant_results, gate, base_model=str(base_path), artifact=str(artifact_dir),
                          limit=options.limit, lm_eval_version=lm_eval.__version__, generative=generative)
    write_report(report, artifact_dir)
    bind_results(artifact_dir)
    return report
