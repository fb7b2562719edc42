"""lm-eval's --output-path / --log-samples / --seed for `kvant eval`, written by lm-eval's own EvaluationTracker,
so the files have lm-eval's layout (OUTPUT/<model>/results_<time>.json, samples_<task>_<time>.jsonl)."""
from pathlib import Path

DEFAULT_SEEDS = (0, 1234, 1234, 1234)  # lm-eval's: python random, numpy, torch, few-shot sampler
SEED_ARGS = ("random_seed", "numpy_random_seed", "torch_random_seed", "fewshot_random_seed")


def parse_seed(text: str) -> dict:
    """lm-eval's --seed: one integer for all four seeds, or four comma-separated values (None keeps one unset)."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 1:
        parts *= 4
    if len(parts) != 4:
        raise ValueError(f"seed must be one integer or four comma-separated values, got {text!r}")
    seeds = {}
    for name, part in zip(SEED_ARGS, parts):
        if part == "None":
            seeds[name] = None
        elif part.lstrip("-").isdigit():
            seeds[name] = int(part)
        else:
            raise ValueError(f"seed must be integers or None, got {text!r}")
    return seeds


def new_tracker(output_path: Path):
    from lm_eval.loggers import EvaluationTracker

    return EvaluationTracker(output_path=str(output_path))


def save(tracker, out: dict, log_samples: bool, model_path: Path, chat_template: str | None) -> None:
    """What lm-eval's CLI does after simple_evaluate: aggregated results, then one samples file per task."""
    # simple_evaluate logged model_args=None for a model object; name the folder after the model as the CLI does
    tracker.general_config_tracker.log_experiment_args(
        model_source="kvant", model_args={"pretrained": str(model_path)}, system_instruction=None,
        chat_template=chat_template, fewshot_as_multiturn=False)
    samples = out.pop("samples", None) if log_samples else None
    tracker.save_results_aggregated(results=out, samples=samples)
    for task in out.get("configs", {}) if samples else ():
        tracker.save_results_samples(task_name=task, samples=samples[task])
