"""Round-to-nearest quantization of an engine model in place (no calibration data): for benchmarks and tests at real
shapes on random weights, where GPTQ/AWQ quality is beside the point but the runtime layers and kernels are not."""
import dataclasses

import torch
from torch import nn

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
    for mod_name, linear in list(model.named_modules()):
        if not isinstance(linear, nn.Linear) or not mod_name.startswith(prefix):
            continue
        w = linear.weight.detach()
        tensors, _, _ = quantize_weight(w.float(), scheme, w.dtype)
        runtime = module_for(linear, config)
        with torch.no_grad():
            for key, value in tensors.items():
                getattr(runtime, key).copy_(value.reshape(getattr(runtime, key).shape))
            if linear.bias is not None:
                runtime.bias.copy_(linear.bias)
        runtime.to(w.device)
        parent_name, _, child = mod_name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, runtime)
    if dataclasses.is_dataclass(getattr(model, "config", None)):  # so the engine picks kernel paths for this scheme
        qconfig = {"quant_method": "compressed-tensors", "ignore": ["lm_head"],
                   "config_groups": {"group_0": dict(config, targets=["Linear"])}}
        model.config = dataclasses.replace(model.config, quantization_config=qconfig)
    return model
