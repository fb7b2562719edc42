def add_parser(sub) -> None:
    p = sub.add_parser("models", help="pull and list models and artifacts",
                       description="Pull the default model; list cached models and quantized artifacts.",
                       epilog="Models live under $KVANT_HOME/models, artifacts under $KVANT_HOME/artifacts "
                              "(KVANT_HOME defaults to ~/.cache/kvant).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    pull = actions.add_parser("pull", help="fetch and convert the default model (SmolLM2-135M-Instruct)")
    pull.add_argument("--force", action="store_true", help="fetch and convert again even if cached")
    listing = actions.add_parser("list", help="show cached models and artifacts (base, scheme, size, bits per "
                                               "weight, gate verdict, checksums)")
    listing.add_argument("--artifacts-dir", default=None,
                         help="where to look for artifacts (default: $KVANT_HOME/artifacts)")
    info = actions.add_parser("info", help="show a model's configuration")
    info.add_argument("model", help="short name, local folder or Hub id")
    p.set_defaults(func=run)


def run(args) -> int:
    from kvant.engine import registry

    if args.action == "pull":
        from tqdm import tqdm

        bar = tqdm(total=100, desc="pull", bar_format="{desc}: {percentage:3.0f}% {postfix}")

        def progress(stage: str, done: int, total: int, message: str) -> None:
            bar.n = int(100 * done / total) if total else bar.n
            bar.set_postfix_str(message)

        try:
            path = registry.pull_default(progress=progress, force=args.force)
        finally:
            bar.close()  # before any error line, which then starts a line of its own
        print(path)
        return 0
    if args.action == "list":
        models = registry.list_cached()
        if not models:
            print(f"no models cached under {registry.models_dir()}; run `kvant models pull`")
        else:
            width = max(len(m.name) for m in models)
            for m in models:
                print(f"{m.name:<{width}}  {m.size_bytes / 2**20:8.1f} MiB  {m.source:<28}  {m.path}")
        return list_artifacts(args.artifacts_dir)
    from kvant.engine.config import ModelConfig

    path = registry.resolve_model(args.model)
    cfg = ModelConfig.from_pretrained(path)
    print(f"{path}\n  architecture {cfg.architecture}, {cfg.num_params / 1e6:.0f}M parameters, "
          f"{cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, heads {cfg.num_attention_heads}/"
          f"{cfg.num_key_value_heads}, context {cfg.max_model_len}"
          + (f", quantized ({cfg.quantization_config.get('format', '?')})" if cfg.quantization_config else ""))
    return 0


def list_artifacts(folder: str | None) -> int:
    from pathlib import Path

    from kvant.eval.inventory import format_rows, list_artifacts

    from kvant.engine.registry import kvant_home

    root = Path(folder) if folder else kvant_home() / "artifacts"
    rows = list_artifacts(root)
    print()
    if not rows:
        print(f"no artifacts under {root}; write one with `kvant quantize MODEL --recipe NAME --out {root}/NAME`")
        return 0
    print(f"artifacts under {root}:")
    print(format_rows(rows))
    return 0
