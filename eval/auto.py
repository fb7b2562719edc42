"""`kvant quantize MODEL --recipe auto`: the smallest mixed-precision artifact that passes the eval gate.

1. Per-unit sensitivity on a few calibration samples (round-to-nearest, KL of the logits, Fisher-estimated or
   measured; cached).
2. The greedy path by sensitivity per byte, and a few levels of it within the budget (`kvant.quantize.auto_plan`).
3. Binary search over the levels: quantize the level (GPTQ or the recipe's algorithm), validate it with the same gate
   `kvant eval` applies; a failure moves up to the next larger level, a pass down.
4. The smallest passing point is renamed into `out`, with its report (points, Pareto SVG, per-layer table). If none
   passes, nothing is written and the error names the best point found.
Every trial is written inside one hidden folder beside `out` that is removed at the end, so an interrupted run
leaves no complete-looking artifact."""
import dataclasses
import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kvant.artifact import manifest as M
from kvant.artifact.card import card_text
from kvant.artifact.errors import KvantError
from kvant.artifact.progress import CancelToken, Progress
from kvant.quantize import sensitivity as S
from kvant.quantize.auto_plan import Point, greedy_path, levels
from kvant.quantize.recipe import Recipe

log = logging.getLogger("kvant.eval.auto")
MAX_TRIALS = 5


class GateNotReached(KvantError):
    exit_code = 1  # the CLI's "eval gate failed"


@dataclass(slots=True)
class AutoResult:
    out: Path
    trials: list[dict]
    chosen: dict
    sensitivity_reused: bool


def quality(report) -> tuple[float | None, float, str]:
    """(quality, gate, name) of an EvalReport, higher is better: the lowest task recovery against the gate's
    min_recovery; without tasks, base / quantized perplexity of the generative check against 1 / max_ppl_ratio."""
    if report.tasks:
        values = [t.recovery if t.recovery is not None else (1.0 if t.passed else 0.0) for t in report.tasks]
        return min(values), report.gate.min_recovery, "min task recovery"
    g = report.generative or {}
    ratio, limit = g.get("ppl_ratio"), g.get("max_ppl_ratio") or 1.0
    return (None if not ratio else 1.0 / ratio), 1.0 / limit, "generative perplexity base / quantized"


def _sensitivity(src: Path, recipe: Recipe, out: Path, progress, cancel) -> tuple[dict, bool]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kvant.engine.registry import kvant_home
    from kvant.quantize.calibration_data import load_calibration

    tokenizer = AutoTokenizer.from_pretrained(src)
    calib_cfg = dataclasses.replace(recipe.calibration, num_samples=min(recipe.sensitivity_samples,
                                                                        recipe.calibration.num_samples))
    def fp32_model():
        return AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()

    # the model is read only when the samples come from it or the cache misses
    hf = fp32_model() if calib_cfg.dataset == "synthetic" else None
    samples = list(load_calibration(calib_cfg, tokenizer, hf).input_ids)
    key = S.cache_key(src, samples, recipe.candidates, recipe.sensitivity)
    cached_at = S.cache_path(kvant_home(), key)
    found = S.load_cached(key, [out / S.FILE, cached_at])
    if found is not None:
        log.info("sensitivity: reusing %s", cached_at)
        return found, True
    if progress is not None:
        progress("sensitivity", 0, 0, "measuring per-layer sensitivity")
    run = S.estimate if recipe.sensitivity == "fisher" else S.measure
    data = run(hf or fp32_model(), samples, recipe.candidates, progress=progress, cancel=cancel) | {"key": key}
    S.save(cached_at, data)
    return data, False


def quantize_auto(model: str, recipe: Recipe, out: Path, validate: Callable[[Path], object], *, force: bool = False,
                  device: str | None = None, progress: Progress | None = None, cancel: CancelToken | None = None,
                  max_trials: int = MAX_TRIALS) -> AutoResult:
    """`validate(artifact_dir) -> EvalReport` runs the gate (kvant eval's, with or without a data folder) and writes
    the artifact's eval/ folder."""
    from kvant.quantize.api import _resolve, quantize

    if not recipe.is_auto:
        raise KvantError("quantize_auto needs an auto recipe (one with candidates and no layer_schemes)")
    out = Path(out)
    if out.exists() and not force:
        raise KvantError(f"{out} already exists (use --force to overwrite)")
    src = _resolve(model)
    sens, reused = _sensitivity(src, recipe, out, progress, cancel)
    path = greedy_path(sens["units"], sens["shapes"])
    todo = levels(path, recipe.budget)
    if not todo:
        raise GateNotReached(f"no mixed-precision point fits the budget of {recipe.budget} bits per weight (the "
                             f"smallest is {path[0].bits_per_weight:.3f}); no artifact written")
    work = out.parent / f".{out.name}.kvant-auto-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    trials: dict[int, dict] = {}
    try:
        lo, hi, best = 0, len(todo) - 1, None
        while lo <= hi and len(trials) < max_trials:
            k = (lo + hi) // 2
            trials[k] = _trial(model, recipe, todo[k], work / f"level-{k}", validate, sens, device, cancel, progress)
            log.info("auto: level %d/%d, %.3f bits per weight, predicted KL %.4f: %s %s, %s", k + 1, len(todo),
                     todo[k].bits_per_weight, todo[k].predicted_kl, trials[k]["quality_name"], trials[k]["quality"],
                     "pass" if trials[k]["passed"] else "fail")
            if trials[k]["passed"]:
                best, hi = k, k - 1
            else:
                lo = k + 1
        records = [trials[k] for k in sorted(trials)]
        if cancel is not None:  # a cancel during the last validation: nothing reaches `out`
            cancel.raise_if_cancelled("auto quantization")
        if best is None:
            raise GateNotReached(_unreached(recipe, records))
        trials[best]["chosen"] = True
        chosen_dir = work / f"level-{best}"
        _finish(chosen_dir, records, trials[best], out)
        _move_into_place(chosen_dir, out, force)
        return AutoResult(out, records, trials[best], reused)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _trial(model, recipe: Recipe, point: Point, folder: Path, validate, sens: dict, device, cancel, progress) -> dict:
    from kvant.quantize.api import quantize

    concrete = dataclasses.replace(recipe, layer_schemes=tuple(sorted(point.choice.items())))
    if progress is not None:
        progress("trial", 0, 0, f"quantizing a point at {point.bits_per_weight:.2f} bits per weight")
    quantize(model, concrete, folder, device=device, cancel=cancel,
             extra_files={S.FILE: S.to_text(sens)},
             manifest_extra={"sensitivity": {"file": S.FILE, "metric": sens["metric"], "key": sens["key"],
                                             "tokens": sens["tokens"], "time_s": sens["time_s"]}})
    if progress is not None:
        progress("trial", 0, 0, "validating it against the gate")
    report = validate(folder)
    q, gate, name = quality(report)
    passed = bool(report.passed)
    if recipe.target is not None:
        # the gate a validator applies may be looser than the target asked for (the offline check has its own
        # thresholds): the point must reach the target on the quality it is ranked by as well
        gate = max(gate, float(recipe.target))
        passed = passed and q is not None and q >= recipe.target
    # the plan's figure (every group-size fallback counted), not the path's estimate
    bits = float(M.read(folder).get("bits_per_weight") or point.bits_per_weight)
    return {"bits_per_weight": round(bits, 4), "predicted_kl": round(point.predicted_kl, 6),
            "quality": None if q is None else round(q, 4), "gate": round(gate, 4), "quality_name": name,
            "passed": passed, "folder": folder.name, "report": report}


def _unreached(recipe: Recipe, records: list[dict]) -> str:
    best = max(records, key=lambda t: (t["quality"] is not None, t["quality"] or 0.0))
    target = f"{recipe.target:.3g}" if recipe.target is not None else "the scheme's gate"
    budget = f" within {recipe.budget} bits per weight" if recipe.budget is not None else ""
    return (f"target {target} not reached{budget}: best point {best['bits_per_weight']:.3f} bits per weight, "
            f"{best['quality_name']} {best['quality']} (gate {best['gate']}) after {len(records)} validated points; "
            "no artifact written")


def _finish(folder: Path, records: list[dict], chosen: dict, out: Path) -> None:
    # the report (eval/auto.md, eval/pareto.svg), the search in kvant.json, the card with both tables; the results
    # name the folder the artifact is about to be renamed to
    from kvant.eval import pareto

    results_path = folder / "eval" / "results.json"
    results = json.loads(results_path.read_text(encoding="utf-8"))
    results["artifact"] = str(out)
    results_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    m = M.read(folder)
    slim = [{k: v for k, v in t.items() if k not in ("report", "folder")} for t in records]
    (folder / "eval" / "pareto.svg").write_text(pareto.svg(slim, chosen["gate"], chosen["quality_name"]),
                                                encoding="utf-8")
    section = pareto.markdown(slim, chosen["gate"], chosen["quality_name"], m.get("layer_schemes") or {})
    (folder / "eval" / "auto.md").write_text(section, encoding="utf-8")
    report = folder / "eval" / "report.md"
    report.write_text(report.read_text(encoding="utf-8").rstrip() + "\n\n" + section, encoding="utf-8")
    m["auto"] = {"points": slim}
    M.write(folder, m)
    (folder / "README.md").write_text(card_text(m, results, out.name), encoding="utf-8")
    M.update_files(folder)


def _move_into_place(src: Path, out: Path, force: bool) -> None:
    if out.exists():
        if not force:
            raise KvantError(f"{out} already exists (use --force to overwrite)")
        old = out.parent / f".{out.name}.kvant-old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
        src.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        src.rename(out)
