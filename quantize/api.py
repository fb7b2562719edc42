"""`quantize(model, recipe, out)`: the whole job, from a model folder/name to a finished artifact."""
import json
import resource
import time
from pathlib import Path

import torch

from kvant.artifact import manifest
from kvant.artifact.card import card_text
from kvant.artifact.errors import KvantError
from kvant.artifact.progress import CancelToken, Progress, silent
from kvant.artifact.gate import default_min_recovery
from kvant.engine.registry import resolve_model
from kvant.quantize import artifact
from kvant.quantize.model_free import quantize_checkpoint
from kvant.quantize.plan import SUPPORTED, Summary
from kvant.quantize.recipe import Recipe, load_recipe

KVANT_VERSION = "0.1.0"


def _resolve(model: str) -> Path:
    path = resolve_model(model)
    if not (Path(path) / "config.json").is_file():
        raise KvantError(f"model {model!r}: no config.json in {path}")
    return Path(path)


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise KvantError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def quantize(model: str, recipe: str | Path | Recipe, out: Path, *, force: bool = False,
             progress: Progress | None = None, cancel: CancelToken | None = None, device: str | None = None,
             model_free: bool | None = None, extra_files: dict[str, str] | None = None,
             manifest_extra: dict | None = None) -> Path:
    """Quantize `model` with `recipe` into the artifact folder `out`. Data-free recipes read the checkpoint's tensors
    without building the model (`model_free`, default: whenever the recipe needs no calibration data); the
    layer-by-layer path gives the same tensors for them. `extra_files` ({relative path: text}) and `manifest_extra`
    (kvant.json keys) let a caller (the auto search) store its findings with the artifact."""
    started = time.monotonic()
    progress, cancel = progress or silent, cancel or CancelToken()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if recipe.is_auto:
        raise KvantError("an auto recipe chooses each layer's scheme against the eval gate: run it with "
                         "`kvant quantize MODEL --recipe auto --out DIR` (kvant.eval.auto.quantize_auto)")
    out = Path(out)
    if out.exists() and not force:
        raise KvantError(f"{out} already exists (use --force to overwrite)")
    src = _resolve(model)
    if out.resolve() == src.resolve():
        raise KvantError(f"output folder {out} is the model folder itself; choose another --out")
    base_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    arch = (base_config.get("architectures") or ["?"])[0]
    if arch not in SUPPORTED:
        raise KvantError(f"architecture {arch} is not supported for quantization (supported: {', '.join(SUPPORTED)})")
    if base_config.get("quantization_config"):
        raise KvantError(f"{src} is already quantized ({base_config['quantization_config'].get('quant_method')})")
    dev = _pick_device(device)

    summary = Summary()
    if model_free is None:
        model_free = not recipe.needs_data
    # weights go into the staging folder as they are produced; any failure or cancel removes it, `out` untouched
    with artifact.staging(out, force) as tmp:
        writer = artifact.ShardWriter(tmp)
        if not model_free:
            plan, ignored, calib = _layer_by_layer(src, base_config, recipe, dev, summary, progress, cancel,
                                                   writer.add)
        else:  # nothing to observe: the checkpoint's tensors are enough, the model is never built
            calib = None
            plan, ignored = quantize_checkpoint(src, base_config, recipe, dev, writer.add, summary=summary,
                                                progress=progress, cancel=cancel)
        cancel.raise_if_cancelled("quantization")
        writer.finish()
        qconfig = artifact.quantization_config(plan, ignored, actorder=recipe.actorder if recipe.uses_gptq else None,
                                               kv_cache=recipe.kv_cache_scheme == "fp8")
        summary.time_s = time.monotonic() - started
        summary.peak_memory_mib = _peak_memory_mib(dev)
        scheme = recipe.quant_scheme.name
        calibration = {"source": recipe.calibration.dataset if calib else None,
                       "num_samples": len(calib.input_ids) if calib else 0,
                       "seq_len": recipe.calibration.seq_len if calib else 0,
                       "sha256": calib.sha256 if calib else None,
                       "time_s": round(summary.time_s, 2), "peak_memory_mib": round(summary.peak_memory_mib, 1),
                       "layer_errors": [None if e != e else round(e, 8) for e in summary.layer_errors]}
        info = _source_info(src)
        kvant_json = manifest.build(
            scheme=scheme, kv_cache_dtype="fp8" if recipe.kv_cache_scheme == "fp8" else "auto",
            base_model={"name": info.get("hub_id", model), "path": str(src),
                        "revision": info.get("revision") or info.get("gguf_sha256"), "architecture": arch,
                        "license": info.get("license")},
            recipe=recipe.to_dict(), calibration=calibration,
            min_recovery=recipe.target if recipe.target is not None else default_min_recovery(scheme),
            kvant_version=KVANT_VERSION)
        # average stored bits per decoder-layer Linear weight, scales included, and each layer's choice when mixed
        kvant_json["bits_per_weight"] = round(summary.bits_per_weight(), 4)
        if recipe.layer_schemes:
            kvant_json["layer_schemes"] = layer_table(summary)
        kvant_json.update(manifest_extra or {})
        # linear suffix -> the INT4 group size used where the recipe's does not divide the input size
        kvant_json["group_size_fallbacks"] = dict(summary.group_size_fallbacks)
        artifact.write_config(tmp, base_config, qconfig)
        artifact.copy_base_files(src, tmp)
        artifact.write_recipe(tmp, recipe.to_dict())
        for rel, text in (extra_files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")
        # the same card `kvant push` regenerates, named after the folder until it has a Hub id
        (tmp / "README.md").write_text(card_text(kvant_json, None, out.name), encoding="utf-8")
        manifest.write(tmp, kvant_json)
    progress("done", 1, 1, f"wrote {out}")
    return out


def layer_table(summary: Summary) -> dict[str, str]:
    # {engine unit (model.layers.3.self_attn.qkv): candidate} of a mixed-precision plan
    from kvant.quantize.candidates import unit_of

    return {unit_of(name): cand for name, (_, _, cand) in summary.linear_bits.items()}


def _layer_by_layer(src: Path, base_config: dict, recipe: Recipe, dev: torch.device, summary: Summary, progress,
                    cancel, sink):
    """Streams the checkpoint through a meta skeleton of the model, one decoder layer in memory at a time; every
    finished tensor goes to `sink`. Returns (plan, ignored Linear names, calibration set or None)."""
    from torch import nn
    from transformers import AutoTokenizer

    from kvant.quantize.calibrate import plan_linears, quantize_layers
    from kvant.quantize.calibration_data import load_calibration
    from kvant.quantize.model_free import model_dtype
    from kvant.quantize.streaming import Checkpoint, skeleton

    progress("load", 0, 0, "loading model")
    tokenizer = AutoTokenizer.from_pretrained(src)
    ckpt = Checkpoint(src, None)
    embed = ckpt.read(["model.embed_tokens.weight"])["model.embed_tokens.weight"]
    ckpt.dtype = dtype = model_dtype(base_config, embed.dtype)
    del embed
    hf = skeleton(src, dtype)
    plan = plan_linears(hf, recipe, summary)
    calib = None
    if recipe.needs_data:
        progress("calibrate", 0, 0, "preparing calibration data")
        calib = load_calibration(recipe.calibration, tokenizer, _generator(src, recipe))
    tied = bool(getattr(hf.config, "tie_word_embeddings", False))
    outside = [n for n in hf.state_dict() if not n.startswith("model.layers.") and not (tied and n == "lm_head.weight")]
    sink(ckpt.read(outside))
    if calib is not None:
        ckpt.materialize(hf.model.embed_tokens, "model.embed_tokens.")
    quantize_layers(hf, recipe, plan, calib, dev, progress=progress, cancel=cancel, summary=summary,
                    checkpoint=ckpt, sink=sink)
    ignored = [n for n, m in hf.named_modules() if isinstance(m, nn.Linear) and n not in plan]
    return plan, ignored, calib


def _generator(src: Path, recipe: Recipe):
    # self-generated ("synthetic") calibration text needs the whole model once, to sample from
    if recipe.calibration.dataset != "synthetic":
        return None
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(src, dtype="auto").eval()


def _source_info(src: Path) -> dict:
    # kvant-source.json (written by the registry's pull) names the Hub id, revision/hash and license
    meta = src / "kvant-source.json"
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
