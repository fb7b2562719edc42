import os

from kvant.tui.commands.eval import DATA_ENV


def add_parser(sub) -> None:
    p = sub.add_parser(
        "quantize", help="quantize a model to a compressed-tensors artifact",
        description="Quantize a Llama/Mistral/Qwen2/Qwen3 model with a recipe (a shipped name such as w4a16-gptq, "
                    "or a YAML file), layer by layer, and write a compressed-tensors artifact folder with a kvant.json "
                    "manifest. INT4 recipes fall back to the largest group size (128, 64, 32, 16, 8) that divides a "
                    "layer's input size, with a warning.")
    p.add_argument("model", help="model: the default's short name (smollm2-135m), a local HF folder or a Hub id")
    p.add_argument("--recipe", required=True, help="shipped recipe name (see recipes/) or path to a recipe YAML")
    p.add_argument("--out", required=True, help="output artifact folder (written atomically)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--num-samples", type=int, help="calibration samples (overrides the recipe)")
    p.add_argument("--seq-len", type=int, help="tokens per calibration sample (overrides the recipe)")
    p.add_argument("--dataset", help="calibration data: builtin, synthetic, a .txt/.jsonl file or folder, "
                                     "or a Hugging Face dataset id (overrides the recipe)")
    p.add_argument("--device", default="auto", help="where each decoder layer is calibrated: auto (CUDA if "
                                                    "present), cpu, cuda, cuda:N")
    g = p.add_argument_group("auto recipes (--recipe auto): per-layer schemes chosen to pass the eval gate")
    g.add_argument("--target", type=float, help="minimum recovery every gated task must reach (overrides the "
                                                "recipe; default: the gate of its scheme)")
    g.add_argument("--budget", type=float, help="largest average bits per weight, scales included (overrides the "
                                                "recipe)")
    g.add_argument("--data-dir", default=os.environ.get(DATA_ENV),
                   help=f"evaluation data for the gate (default: ${DATA_ENV}; none: kvant's offline checks)")
    g.add_argument("--tasks", help="comma-separated tasks of the gate with --data-dir (default: "
                                   "kvant_arc_easy,kvant_lambada_openai)")
    g.add_argument("--limit", type=int, default=25, help="items per gated task (default: 25)")
    g.add_argument("--max-trials", type=int, default=5, help="most points quantized and validated (default: 5)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from kvant.quantize.api import quantize
    from kvant.quantize.recipe import load_recipe

    recipe = load_recipe(args.recipe).with_calibration(num_samples=args.num_samples, seq_len=args.seq_len,
                                                       dataset=args.dataset)
    if recipe.is_auto:
        return run_auto(args, recipe)
    if args.target is not None or args.budget is not None:
        raise ValueError("--target and --budget apply to auto recipes (--recipe auto) only")

    from tqdm import tqdm

    bar = None

    def progress(stage: str, done: int, total: int, message: str) -> None:
        nonlocal bar
        if stage == "quantize":  # one bar over the decoder layers
            if bar is None:
                bar = tqdm(total=total, desc="quantize", unit="layer", leave=False)
            bar.update(done - bar.n)
        elif stage in ("load", "calibrate"):
            print(message, file=sys.stderr, flush=True)
        elif stage == "done":
            print("done", file=sys.stderr, flush=True)

    import time

    started = time.monotonic()
    try:
        out = quantize(args.model, recipe, Path(args.out), force=args.force, progress=progress, device=args.device)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.monotonic() - started  # load, calibrate, quantize and write: the whole run after start-up
    from kvant.artifact.manifest import read

    written = read(out)
    calib = written["calibration"]
    errors = [e for e in calib.get("layer_errors", []) if e is not None]
    worst = f", worst layer output error {max(errors):.2e}" if errors else ""
    print(f"wrote {out} in {elapsed:.1f}s (peak memory {calib['peak_memory_mib']:.0f} MiB{worst})")
    fallbacks = written.get("group_size_fallbacks") or {}
    if fallbacks:
        print("group size fallbacks: " + ", ".join(f"{k} {v}" for k, v in sorted(fallbacks.items())))
    return 0


def auto_validator(model: str, data_dir, tasks: str | None, limit: int):
    """The gate an auto search validates each point with: lm-eval tasks on a data folder, else kvant's offline
    checks (what `kvant eval` and `kvant demo` run without data)."""
    from pathlib import Path

    if data_dir:
        from kvant.eval.generative import GenerativeConfig
        from kvant.eval.runner import EvalOptions, evaluate_artifact, plan_tasks
        from kvant.tui.commands.demo import DATA_TASKS, GENERATIVE_TOKENS

        names = tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks else DATA_TASKS
        options = EvalOptions(tasks=names, limit=limit, data_dir=Path(data_dir),
                              generative=GenerativeConfig(max_tokens=GENERATIVE_TOKENS))
        plan_tasks(options.tasks, options.data_dir)  # bad task names fail before any work
        return lambda folder: evaluate_artifact(folder, options=options)
    from kvant.engine.registry import resolve_model
    from kvant.tui.commands.demo import validate_offline

    base = resolve_model(model)
    return lambda folder: validate_offline(folder, base)


def run_auto(args, recipe) -> int:
    import dataclasses
    import sys
    from pathlib import Path

    from kvant.eval.auto import quantize_auto

    changes = {k: v for k, v in (("target", args.target), ("budget", args.budget)) if v is not None}
    recipe = dataclasses.replace(recipe, **changes)  # the recipe's own checks name a bad value
    if args.max_trials < 1:
        raise ValueError(f"max_trials must be >= 1, got {args.max_trials}")
    validate = auto_validator(args.model, args.data_dir, args.tasks, args.limit)

    def progress(stage: str, done: int, total: int, message: str) -> None:
        if not (stage in ("sensitivity", "quantize") and total):  # the steps, not the per-unit counts
            print(message, file=sys.stderr, flush=True)

    result = quantize_auto(args.model, recipe, Path(args.out), validate, force=args.force, device=args.device,
                           progress=progress, max_trials=args.max_trials)
    for t in result.trials:
        print(f"  {t['bits_per_weight']:.3f} bits/weight: {t['quality_name']} {t['quality']} "
              f"(gate {t['gate']}) {'pass' if t['passed'] else 'FAIL'}{' <- chosen' if t.get('chosen') else ''}")
    print(f"wrote {result.out}: {result.chosen['bits_per_weight']:.3f} bits per weight, gate PASS "
          f"(sensitivity {'reused' if result.sensitivity_reused else 'measured'}; report in "
          f"{result.out / 'eval' / 'report.md'})")
    return 0
