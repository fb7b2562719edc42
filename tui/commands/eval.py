import os

DATA_ENV = "KVANT_EVAL_DATA"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate an artifact against its base model and gate it",
        description="Run lm-eval tasks on a quantized artifact and its base model through kvant's engine, print "
                    "recovery per task, run the generative check, write eval/results.json and eval/report.md into "
                    "the artifact. Exit code 1 when the gate fails.",
        epilog="Base-model results are cached under $KVANT_HOME/eval (KVANT_HOME defaults to ~/.cache/kvant).")
    p.add_argument("artifact", help="artifact folder written by `kvant quantize` (holds kvant.json)")
    p.add_argument("--base", help="base model (default: the manifest's base_model)")
    p.add_argument("--tasks", help="comma-separated tasks: kvant local tasks (kvant_arc_easy, ...; need --data-dir) "
                                   "or lm-eval task names (need the Hub unless --data-dir holds a local copy)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items of each task")
    p.add_argument("--data-dir", default=os.environ.get(DATA_ENV),
                   help=f"local evaluation data folder (default: ${DATA_ENV})")
    p.add_argument("--batch-size", default="auto", help="requests per engine call (default: auto)")
    p.add_argument("--no-generative", action="store_true", help="skip the generative check")
    p.add_argument("--no-cache", action="store_true", help="re-run the base model even if its results are cached")
    p.add_argument("--no-verify", action="store_true",
                   help="evaluate without checking the artifact's files against kvant.json (printed as a warning)")
    p.add_argument("--max-model-len", type=int, help="engine context length (default: the model's)")
    add_lm_eval_flags(p)
    p.set_defaults(func=run)


# ---- lm-eval's flags, same names (both spellings) and meanings (issue #23)
def add_lm_eval_flags(p) -> None:
    g = p.add_argument_group("lm-eval options")
    g.add_argument("--num-fewshot", "--num_fewshot", type=int, default=None, metavar="N",
                   help="few-shot examples per prompt (default: each task's own)")
    g.add_argument("--apply-chat-template", "--apply_chat_template", action="store_true",
                   help="wrap prompts in the model's chat template")
    g.add_argument("--output-path", "--output_path", default=None, metavar="DIR",
                   help="also write lm-eval's results JSON (DIR/<model>/results_<time>.json) for artifact and base")
    g.add_argument("--log-samples", "--log_samples", action="store_true",
                   help="with --output-path: also write every prompt and answer (samples_<task>_<time>.jsonl)")
    g.add_argument("--seed", default="0,1234,1234,1234",
                   help="lm-eval's seeds: one integer, or python,numpy,torch,few-shot (default: 0,1234,1234,1234)")


def lm_eval_options(args) -> dict:
    from kvant.eval.lm_eval_output import DEFAULT_SEEDS, parse_seed

    kwargs = {}
    if args.num_fewshot is not None:
        kwargs["num_fewshot"] = args.num_fewshot
    if args.apply_chat_template:
        kwargs["apply_chat_template"] = True
    seeds = parse_seed(args.seed)
    if tuple(seeds.values()) != DEFAULT_SEEDS:  # lm-eval's defaults stay out of the base-cache key
        kwargs.update(seeds)
    return kwargs


def run(args) -> int:
    from pathlib import Path

    from kvant.eval.generative import GenerativeConfig
    from kvant.eval.report import format_generative, format_table
    from kvant.eval.runner import EvalOptions, evaluate_artifact

    engine_kwargs = {"max_model_len": args.max_model_len} if args.max_model_len else {}
    options = EvalOptions(
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else None,
        limit=args.limit, data_dir=Path(args.data_dir) if args.data_dir else None, batch_size=args.batch_size,
        generative=None if args.no_generative else GenerativeConfig(), use_cache=not args.no_cache,
        engine_kwargs=engine_kwargs | ({"verify": False} if args.no_verify else {}), verify=not args.no_verify,
        lm_eval_kwargs=lm_eval_options(args), output_path=Path(args.output_path) if args.output_path else None,
        log_samples=args.log_samples)
    if options.data_dir is None and options.tasks is None and not hub_reachable():
        return run_offline(Path(args.artifact), args)
    report = evaluate_artifact(Path(args.artifact), base=args.base, options=options)
    print(format_table(report))
    if report.generative:
        print()
        print(format_generative(report.generative))
    print(f"\nwrote {Path(args.artifact) / 'eval' / 'results.json'} and report.md")
    print("gate: PASS" if report.passed else "gate: FAIL")
    return 0 if report.passed else 1


def hub_reachable(timeout_s: float = 3.0) -> bool:
    import socket

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = constants.ENDPOINT.split("://", 1)[-1].split("/", 1)[0]
    try:
        socket.create_connection((host.split(":")[0], 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def run_offline(artifact, args) -> int:
    """No data folder and no Hub: the checks that ship with kvant, as `kvant demo` runs them."""
    import sys

    from kvant.engine.integrity import check_or_warn
    from kvant.engine.registry import resolve_model
    from kvant.artifact import manifest as M
    from kvant.eval.report import format_generative
    from kvant.eval.offline import NUM_HELDOUT
    from kvant.tui.commands.demo import validate_offline

    manifest = M.read(artifact)  # input and integrity checks first
    check_or_warn(artifact, not args.no_verify)
    print(f"no evaluation data (--data-dir, ${DATA_ENV}) and the Hub is unreachable: running the offline checks "
          f"(perplexity on {NUM_HELDOUT} builtin paragraphs held out from calibration, generative agreement)",
          file=sys.stderr, flush=True)
    base_path = resolve_model(args.base or M.base_reference(manifest))
    report = validate_offline(artifact, base_path)
    p = report.perplexity
    print(f"checks run: {p.task} word perplexity base {p.base:.3f}, quantized {p.quant:.3f} (ratio {p.ratio:.4f}, "
          "not gated); generative agreement")
    print(format_generative(report.generative))
    print(f"\nwrote {artifact / 'eval' / 'results.json'} and report.md")
    print("gate: PASS" if report.passed else "gate: FAIL")
    return 0 if report.passed else 1
