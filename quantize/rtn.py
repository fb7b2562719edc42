"""Round-to-nearest quantization of an engine model in place (no calibration data): for benchmarks and tests at real
shapes on random weights, where GPTQ/AWQ quality is beside the point but the runtime layers and kernels are not."""
import dataclasses

import torch
from torch import nn

from kvant.engine.loader import load_part, process_weights_after_loading
from kvant.engine.model import stacked_output_sizes, stacked_parts
from kvant.engine.quant_linear import module_for
from kvant.quantize.linear_quant import quantize_weight
from kvant.artifact.schemes import get_scheme

# bench's --quant names -> scheme presets (INT4 group size 128, as the w4a16 recipes)
PRESETS = {"fp8": ("FP8_DYNAMIC", None), "int8": ("W8A8_INT8", None), "w8a16": ("W8A16_INT8", None),
           "int4": ("W4A16", 128)}


def quantize_model_rtn(model: nn.Module, quant: str, *, prefix: str = "model.layers.") -> nn.Module:
    """Swap every nn.Linear under `prefix` (the decoder layers; embeddings and lm_head stay) for the runtime module of
    `quant`, its weights quantized round-to-nearest. Returns the model, changed in place."""
    if quant not in PRESETS:
        raise ValueError(f"quant must be one of {sorted(PRESETS)}, got {quant!r}")
    name, group = PRESETS[quant]
    scheme = get_scheme(name, group)
    config = {"weights": scheme.weights.to_config(),
              "input_activations": None if scheme.input_activations is None else scheme.input_activations.to_config()}
    merged = stacked_output_sizes(model.config) if hasattr(model, "config") else {}
    for mod_name, linear in list(model.named_modules()):
        if not isinstance(linear, nn.Linear) or not mod_name.startswith(prefix):
            continue
        w = linear.weight.detach()
        runtime = module_for(linear, config, merged=mod_name.rpartition(".")[2] in merged)
        runtime.to(w.device)
        with torch.no_grad():
            if mod_name.rpartition(".")[2] in merged:
                # each part (q/k/v, gate/up) quantized on its own, as an artifact stores it, then stacked by the loader
                for part, first, rows in stacked_parts(model.config, mod_name):
                    tensors, _, _ = quantize_weight(w[first:first + rows].float(), scheme, w.dtype)
                    for key, value in tensors.items():
                        load_part(getattr(runtime, key), key, value.to(w.device), first, rows, w.shape[0],
                                  f"{part}.{key}")
            else:
                tensors, _, _ = quantize_weight(w.float(), scheme, w.dtype)
                for key, value in tensors.items():
                    getattr(runtime, key).copy_(value.reshape(getattr(runtime, key).shape))
            if linear.bias is not None:
                runtime.bias.copy_(linear.bias)
        parent_name, _, child = mod_name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, runtime)
    process_weights_after_loading(model)
    if dataclasses.is_dataclass(getattr(model, "config", None)):  # so the engine picks kernel paths for this scheme
        qconfig = {"quant_method": "compressed-tensors", "ignore": ["lm_head"],
                   "config_groups": {"group_0": dict(config, targets=["Linear"])}}
        model.config = dataclasses.replace(model.config, quantization_config=qconfig)
    return model
