"""Recovery table, gates, eval/results.json and eval/report.md (schema in ARCHITECTURE.md)."""
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kvant.artifact.gate import Gate

RESULTS_FORMAT = 1
# task -> primary metric (lm-eval metric key without the ",filter" suffix); others fall back to acc_norm/acc
PRIMARY_METRIC = {"winogrande": "acc", "boolq": "acc", "lambada_openai": "acc", "wikitext": "word_perplexity"}
PERPLEXITY_METRIC = "word_perplexity"


@dataclass(slots=True, frozen=True)
class TaskRecovery:
    task: str
    metric: str
    base: float
    base_stderr: float
    quant: float
    quant_stderr: float
    recovery: float | None
    recovery_stderr: float | None
    passed: bool


@dataclass(slots=True, frozen=True)
class Perplexity:
    task: str
    base: float
    quant: float
    ratio: float  # quant / base; > 1 means the quantized model is more perplexed


@dataclass(slots=True)
class EvalReport:
    base_model: str
    artifact: str
    limit: int | None
    gate: Gate
    tasks: list[TaskRecovery]
    perplexity: Perplexity | None
    generative: dict | None
    lm_eval_version: str
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        gen_ok = self.generative is None or bool(self.generative.get("passed", True))
        return all(t.passed for t in self.tasks) and gen_ok

    def to_json(self) -> dict:
        return {
            "format": RESULTS_FORMAT, "created": self.created, "lm_eval_version": self.lm_eval_version,
            "limit": self.limit, "base_model": self.base_model, "artifact": self.artifact,
            "gate": {"min_recovery": self.gate.min_recovery},
            "tasks": [asdict(t) for t in self.tasks],
            "perplexity": asdict(self.perplexity) if self.perplexity else None,
            "generative": self.generative, "passed": self.passed,
        }


def recovery(base: float, base_stderr: float, quant: float, quant_stderr: float) -> tuple[float | None, float | None]:
    # r = q / b; delta method with independent errors: var(r) = (sq / b)^2 + (q sb / b^2)^2.
    # The two runs score the same items, so errors correlate positively and this over-, not under-states the stderr.
    if base == 0:
        return None, None
    r = quant / base
    se = math.sqrt((quant_stderr / base) ** 2 + (quant * base_stderr / base**2) ** 2)
    return r, se


def task_recovery(task: str, metric: str, base: float, base_stderr: float, quant: float, quant_stderr: float,
                  gate: Gate) -> TaskRecovery:
    r, se = recovery(base, base_stderr, quant, quant_stderr)
    passed = quant >= base if r is None else r >= gate.min_recovery
    return TaskRecovery(task, metric, base, base_stderr, quant, quant_stderr, r, se, passed)


def short_task_name(task: str) -> str:
    return task.removeprefix("kvant_")


def primary_metric(task: str, metrics: dict) -> str:
    preferred = PRIMARY_METRIC.get(short_task_name(task))
    for name in ([preferred] if preferred else []) + ["acc_norm", "acc", "exact_match"]:
        if f"{name},none" in metrics:
            return name
    raise ValueError(f"task {task} reports none of the metrics kvant gates on: {sorted(metrics)}")


def _stderr(metrics: dict, metric: str) -> float:
    value = metrics.get(f"{metric}_stderr,none")
    return float(value) if isinstance(value, (int, float)) else 0.0


def build_report(base_results: dict, quant_results: dict, gate: Gate, *, base_model: str, artifact: str,
                 limit: int | None, lm_eval_version: str, generative: dict | None = None) -> EvalReport:
    """base_results / quant_results: lm-eval's `results` dicts, task -> {"metric,filter": value, ...}."""
    tasks, ppl = [], None
    for task in sorted(quant_results):
        if task not in base_results:
            raise ValueError(f"task {task} is missing from the base model's results")
        b, q = base_results[task], quant_results[task]
        metric = primary_metric(task, q)
        if metric == PERPLEXITY_METRIC:
            bv, qv = float(b[f"{metric},none"]), float(q[f"{metric},none"])
            ppl = Perplexity(task, bv, qv, qv / bv)
            continue
        tasks.append(task_recovery(task, metric, float(b[f"{metric},none"]), _stderr(b, metric),
                                   float(q[f"{metric},none"]), _stderr(q, metric), gate))
    return EvalReport(base_model, artifact, limit, gate, tasks, ppl, generative, lm_eval_version)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_table(report: EvalReport) -> str:
    head = f"| task | metric | base | quantized | recovery | gate ≥ {_pct(report.gate.min_recovery)} |"
    lines = [head, "|---|---|---|---|---|---|"]
    for t in report.tasks:
        rec = "n/a" if t.recovery is None else f"{_pct(t.recovery)} ± {_pct(t.recovery_stderr)}"
        lines.append(f"| {short_task_name(t.task)} | {t.metric} | {t.base:.4f} ± {t.base_stderr:.4f} | "
                     f"{t.quant:.4f} ± {t.quant_stderr:.4f} | {rec} | {'pass' if t.passed else 'FAIL'} |")
    if report.perplexity:
        p = report.perplexity
        lines.append(f"| {short_task_name(p.task)} | word_perplexity | {p.base:.3f} | {p.quant:.3f} | "
                     f"ratio {p.ratio:.4f} | not gated |")
    return "\n".join(lines)


def format_generative(gen: dict) -> str:
    return (f"| prompts | prefix agreement | token agreement | base-judged perplexity ratio | gate ≤ "
            f"{gen['max_ppl_ratio']} |\n|---|---|---|---|---|\n| {gen['num_prompts']} | "
            f"{_pct(gen['prefix_agreement'])} | {_pct(gen['token_agreement'])} | {gen['ppl_ratio']:.4f} | "
            f"{'pass' if gen['passed'] else 'FAIL'} |")


def format_markdown(report: EvalReport) -> str:
    limit = "all items" if report.limit is None else f"the first {report.limit} items per task"
    parts = [
        f"# Evaluation of {report.artifact}", "",
        f"Base model: `{report.base_model}`; lm-eval {report.lm_eval_version}; {limit}; created {report.created}.",
        "Recovery = quantized score / base score; its stderr comes from both runs' stderrs by the delta method "
        "(independent errors, so it is an upper bound).", "",
        "## Recovery", "", format_table(report), "",
    ]
    if report.generative:
        parts += ["## Generative check", "",
                  "Greedy chat completions of the artifact and the base on a fixed prompt set. Prefix agreement: "
                  "share of the base's tokens before the first divergence; token agreement: position-wise matches "
                  "over the longer output; perplexity ratio: the base model's per-token perplexity of the "
                  "artifact's text over that of its own text.", "", format_generative(report.generative), ""]
    parts.append(f"**Overall: {'PASS' if report.passed else 'FAIL'}**")
    return "\n".join(parts) + "\n"


def write_report(report: EvalReport, artifact_dir: Path) -> tuple[Path, Path]:
    out = Path(artifact_dir) / "eval"
    out.mkdir(exist_ok=True)
    results, md = out / "results.json", out / "report.md"
    for path, text in ((results, json.dumps(report.to_json(), indent=2) + "\n"), (md, format_markdown(report))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return results, md
