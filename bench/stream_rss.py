"""Host memory of `kvant quantize` on a random-weight checkpoint written to disk (real shapes, say nothing of quality).

    python bench/stream_rss.py make --config bench/configs/llama-3.2-1b.json --tokenizer DIR --base /tmp/base
    /usr/bin/time -v python bench/stream_rss.py quantize --base /tmp/base --out /tmp/art --recipe w4a16-gptq \
        --num-samples 8 --seq-len 256 [--device cuda] [--whole-model] [--json OUT.json]

--whole-model is the path streaming replaced, kept as the reference for a same-recipe pair: the whole model loaded
by transformers, every calibration activation in memory, all outputs held and written once (model.safetensors only).

Run the two steps as separate processes so that the peak RSS `/usr/bin/time -v` reports is the quantize step's.
"""
import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def make(args) -> None:
    from check_logits import hf_model

    shutil.rmtree(args.base, ignore_errors=True)
    model = hf_model(args.config, 0, args.device)
    model.save_pretrained(args.base)
    for name in TOKENIZER_FILES:
        if (args.tokenizer / name).is_file():
            shutil.copy2(args.tokenizer / name, args.base / name)
    size = sum(f.stat().st_size for f in args.base.glob("*.safetensors"))
    print(json.dumps({"base": str(args.base), "base_gib": round(size / 2**30, 2)}))


def whole_model(base: Path, recipe, out: Path, device: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kvant.quantize import artifact
    from kvant.quantize.calibrate import plan_linears, quantize_layers
    from kvant.quantize.calibration_data import load_calibration
    from kvant.quantize.plan import Summary

    hf = AutoModelForCausalLM.from_pretrained(base, dtype="auto").eval()
    summary = Summary()
    plan = plan_linears(hf, recipe, summary)
    calib = load_calibration(recipe.calibration, AutoTokenizer.from_pretrained(base), hf)
    tensors = quantize_layers(hf, recipe, plan, calib, torch.device(device), summary=summary,
                              activation_budget=1 << 50)  # every activation kept, as before streaming
    tied = hf.config.tie_word_embeddings
    tensors.update({n: t.detach().to("cpu", hf.dtype) for n, t in hf.state_dict().items()
                    if not n.startswith("model.layers.") and not (tied and n == "lm_head.weight")})
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    artifact.write_weights(out, tensors)


def quantize_step(args) -> None:
    from kvant.quantize.api import quantize
    from kvant.quantize.recipe import load_recipe

    recipe = load_recipe(args.recipe).with_calibration(num_samples=args.num_samples, seq_len=args.seq_len)
    t = time.perf_counter()
    if args.whole_model:
        whole_model(args.base, recipe, args.out, args.device)
    else:
        quantize(str(args.base), recipe, args.out, device=args.device, force=True)
    result = {"recipe": args.recipe, "path": "whole-model" if args.whole_model else "streaming",
              "num_samples": args.num_samples, "seq_len": args.seq_len,
              "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "quantize_s": round(time.perf_counter() - t, 1),
              "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
              "artifact_gib": round(sum(f.stat().st_size for f in args.out.glob("*.safetensors")) / 2**30, 2),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.device == "cuda":
        result["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    m = sub.add_parser("make")
    m.add_argument("--config", type=Path, required=True)
    m.add_argument("--tokenizer", type=Path, required=True)
    m.add_argument("--base", type=Path, required=True)
    m.add_argument("--device", default="cpu")
    q = sub.add_parser("quantize")
    q.add_argument("--base", type=Path, required=True)
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--recipe", default="w4a16-gptq")
    q.add_argument("--num-samples", type=int, default=8)
    q.add_argument("--seq-len", type=int, default=256)
    q.add_argument("--device", default="cpu")
    q.add_argument("--whole-model", action="store_true")
    q.add_argument("--json", type=Path)
    args = p.parse_args()
    make(args) if args.step == "make" else quantize_step(args)


if __name__ == "__main__":
    main()
