"""Data-free schemes without building the model: read the checkpoint's tensors shard by shard, quantize each targeted
Linear weight as it comes, pass every other tensor through. Gives the same tensors as the layer-by-layer loop (which
a data-free recipe would only use to walk the layers) in a fraction of the time: no model construction, no
transformers import. Every finished tensor goes straight to a sink (the artifact's shard writer), so the host holds
at most one output shard, not the whole model, and maps an input file only while one tensor is read."""
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from kvant.artifact.errors import KvantError
from kvant.artifact.progress import CancelToken, Progress, eta_message, silent
from kvant.quantize.linear_quant import quantize_weight
from kvant.quantize.plan import Summary, plan_shapes
from kvant.quantize.recipe import Recipe
from kvant.artifact.schemes import Scheme

# buffers some older checkpoints carry that the model does not load
SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)


def _shards(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [src / f for f in files]
    single = src / "model.safetensors"
    if not single.is_file():
        raise KvantError(f"{src}: no model.safetensors or model.safetensors.index.json (data-free quantization "
                         f"reads safetensors checkpoints)")
    return [single]


def model_dtype(config: dict, stored: torch.dtype) -> torch.dtype:
    # the dtype transformers loads with dtype="auto": the config's, else the stored one
    name = config.get("dtype") or config.get("torch_dtype")
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    return dtype if isinstance(dtype, torch.dtype) else stored


def linear_shapes(src: Path, config: dict) -> dict[str, tuple[int, int]]:
    # {module name: (out, in)}: every 2-D weight of a decoder layer (in the supported families these are all Linear,
    # norms are 1-D), plus lm_head, which is a Linear even when tied to the embeddings
    shapes = {}
    for shard in _shards(src):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                if key.startswith("model.layers.") and key.endswith(".weight"):
                    shape = f.get_slice(key).get_shape()
                    if len(shape) == 2:
                        shapes[key.removesuffix(".weight")] = (shape[0], shape[1])
    # in module order, as the model lists them, so the config's groups come out as the layer-by-layer path writes them
    ordered = dict(sorted(shapes.items(), key=_module_order))
    ordered["lm_head"] = (config["vocab_size"], config["hidden_size"])
    return ordered


MODULE_ORDER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                "mlp.up_proj", "mlp.down_proj")


def _module_order(item) -> tuple:
    _, _, index, rest = item[0].split(".", 3)
    return int(index), MODULE_ORDER.index(rest) if rest in MODULE_ORDER else len(MODULE_ORDER), rest


def _layer_of(module: str) -> int:
    return int(module.split(".", 3)[2])  # model.layers.<i>.<rest>


def _tensor_names(shards: list[Path]) -> list[tuple[Path, str]]:
    names = []
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            names.extend((shard, key) for key in f.keys())
    return names


def _read(shard: Path, key: str) -> torch.Tensor:
    # the file is mapped only while this one tensor is copied out: one mapping held across the loop keeps every page
    # read so far resident in this process (8B single-file checkpoint: 17 GiB peak RSS for a 5.3 GiB output)
    with safe_open(str(shard), framework="pt") as f:
        return f.get_tensor(key)


def quantize_checkpoint(src: Path, config: dict, recipe: Recipe, device: torch.device,
                        sink: Callable[[dict[str, torch.Tensor]], None], *, summary: Summary,
                        progress: Progress | None = None,
                        cancel: CancelToken | None = None) -> tuple[dict[str, Scheme], list]:
    """Hands every output tensor ({checkpoint name: tensor}, on the CPU) to `sink` as it is produced; returns (plan,
    ignored Linear names) for a data-free recipe."""
    progress, cancel = progress or silent, cancel or CancelToken()
    if recipe.needs_data:
        raise KvantError("model-free quantization takes data-free recipes only (round-to-nearest, dynamic "
                         "activations, no smoothing and no KV-cache scales)")
    shapes = linear_shapes(src, config)
    plan = plan_shapes(shapes, recipe, summary)
    tied = bool(config.get("tie_word_embeddings", False))
    shards = _shards(src)
    done, total = 0, len(plan)
    # progress per decoder layer, as the layer-by-layer loop reports it: a layer counts once its last planned weight
    # is quantized (shards list layers in any order)
    left = Counter(_layer_of(name) for name in plan)
    layers_done, start = 0, time.monotonic()
    dtype = None
    for shard, key in _tensor_names(shards):
        cancel.raise_if_cancelled("quantization")
        if key.endswith(SKIPPED_SUFFIXES) or (tied and key == "lm_head.weight"):
            continue
        t = _read(shard, key)
        dtype = dtype or model_dtype(config, t.dtype)
        module = key.removesuffix(".weight")
        if key.endswith(".weight") and module in plan:
            q, _, _ = quantize_weight(t.to(device, torch.float32), plan[module], dtype, dequantize=False,
                                      observer=recipe.observer)
            sink({f"{module}.{n}": v.cpu() for n, v in q.items()})
            done += 1
            left[_layer_of(module)] -= 1
            if left[_layer_of(module)] == 0:
                layers_done += 1
                progress("quantize", layers_done, len(left),
                         eta_message("layer", layers_done, len(left), start))
        else:
            sink({key: t.to(dtype) if t.is_floating_point() else t})
    summary.layer_errors.extend([float("nan")] * config["num_hidden_layers"])  # nothing to measure them against
    if done != total:
        raise KvantError(f"{src}: {total - done} planned Linear weights were not found in the checkpoint")
    ignored = [n for n in shapes if n not in plan]
    return plan, ignored
