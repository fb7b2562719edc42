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
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from kvant.quantize.api import quantize
    from kvant.quantize.recipe import load_recipe

    recipe = load_recipe(args.recipe).with_calibration(num_samples=args.num_samples, seq_len=args.seq_len,
                                                       dataset=args.dataset)

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
