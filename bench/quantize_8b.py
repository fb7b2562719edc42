"""`kvant quantize` at 7-8B scale: peak accelerator memory, host memory and time of the layer-by-layer GPTQ loop on a
random-weight checkpoint of a real config, then the artifact's load and a first generation in kvant's engine.

    python bench/quantize_8b.py --config bench/configs/llama-3.1-8b.json --tokenizer DIR --work /tmp/q8b \
        --recipe w4a16-gptq --num-samples 128 --seq-len 2048 --json OUT.json

Random weights say nothing about quality; they have the real shapes, which is what memory and time depend on. The
tokenizer (any, e.g. the default model's) only turns the built-in calibration text into ids below the vocab size.
"""
import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch

from check_logits import hf_model  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def rss_peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, required=True, help="folder with tokenizer.json / tokenizer_config.json")
    p.add_argument("--work", type=Path, default=Path("/tmp/kvant-q8b"))
    p.add_argument("--recipe", default="w4a16-gptq")
    p.add_argument("--num-samples", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--json", type=Path)
    p.add_argument("--no-engine", action="store_true", help="stop after quantizing (skip loading and generating)")
    args = p.parse_args()
    result = {"config": args.config.name, "recipe": args.recipe, "num_samples": args.num_samples,
              "seq_len": args.seq_len, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def save(quiet: bool = False):
        if not quiet:
            print(json.dumps(result), flush=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))

    base, art = args.work / "base", args.work / "art"
    shutil.rmtree(args.work, ignore_errors=True)
    t = time.perf_counter()
    model = hf_model(args.config, 0, "cuda" if torch.cuda.is_available() else "cpu")
    model.save_pretrained(base)
    for name in TOKENIZER_FILES:
        if (args.tokenizer / name).is_file():
            shutil.copy2(args.tokenizer / name, base / name)
    result["base_gib"] = round(sum(f.stat().st_size for f in base.glob("*.safetensors")) / 2**30, 2)
    result["make_checkpoint_s"] = round(time.perf_counter() - t, 1)
    del model
    torch.cuda.empty_cache()
    save()

    from kvant.quantize.api import quantize
    from kvant.quantize.recipe import load_recipe

    recipe = load_recipe(args.recipe).with_calibration(num_samples=args.num_samples, seq_len=args.seq_len)
    rss_before = rss_peak_gib()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    last = [0.0]

    layer_s = result["layer_s"] = []

    def progress(stage: str, fraction) -> None:
        # every finished layer is saved at once, so a run stopped part-way still tells the per-layer time and the
        # peak memory so far (every decoder layer of these models has the same shapes)
        if stage.startswith("layer "):
            layer_s.append(round(time.perf_counter() - t - sum(layer_s), 2))
            result["quantize_peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            result["peak_rss_gib"] = round(rss_peak_gib(), 2)
            save(quiet=True)
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"  {time.perf_counter() - t:6.0f} s  {stage}", flush=True)

    quantize(str(base), recipe, art, progress=progress, device="cuda")
    result["quantize_s"] = round(time.perf_counter() - t, 1)
    result["quantize_peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["quantize_peak_cuda_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    result["peak_rss_gib_before_quantize"] = round(rss_before, 2)
    result["peak_rss_gib"] = round(rss_peak_gib(), 2)
    result["artifact_gib"] = round(sum(f.stat().st_size for f in art.glob("*.safetensors")) / 2**30, 2)
    manifest = json.loads((art / "kvant.json").read_text())
    errors = [e for e in manifest["calibration"]["layer_errors"] if e is not None]
    result["layer_error_first_last_max"] = [errors[0], errors[-1], max(errors)] if errors else None
    save()
    shutil.rmtree(base)
    if args.no_engine:
        return

    from kvant.engine import LLM, SamplingParams

    t = time.perf_counter()
    llm = LLM(str(art), max_model_len=4096)
    result["engine_ready_s"] = round(time.perf_counter() - t, 1)
    prompts = [[1000 + i, 2000, 3000 + i, 4000] * 8 for i in range(32)]
    params = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:2], params)
    t = time.perf_counter()
    outs = llm.generate(prompts, params)
    wall = time.perf_counter() - t
    result["generate_32x64_tok_s"] = round(sum(len(o.outputs[0].token_ids) for o in outs) / wall, 1)
    save()


if __name__ == "__main__":
    main()
