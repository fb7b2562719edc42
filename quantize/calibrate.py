"""The layer-by-layer loop: capture the first decoder layer's inputs, then for each decoder layer on the accelerator:
collect statistics, smooth (SmoothQuant/AWQ), quantize (RTN/GPTQ), re-run to feed the next layer the quantized
layer's outputs."""
import threading
import time
from contextlib import nullcontext

import torch
from torch import nn
from tqdm import tqdm

from kvant.artifact.errors import KvantError
from kvant.quantize.awq import awq_layer
from kvant.quantize.calibration_data import CalibrationSet
from kvant.quantize.kv_cache import KVObserver, observing
from kvant.quantize.linear_quant import quantize_weight
from kvant.quantize.observers import AbsMax, ChannelAbsMax, Hessian, TokenSample
from kvant.quantize.plan import Summary, plan_shapes
from kvant.quantize.recipe import Recipe
from kvant.artifact.schemes import Scheme
from kvant.quantize.smoothquant import smooth_layer
from kvant.quantize.streaming import Activations, ActivationBudget, Checkpoint, release

AWQ_TOKENS = 4096  # sampled input rows per Linear for AWQ's searches
FP8_MAX = 448.0
ACTIVATION_BYTES_CUDA = 4 << 30  # calibration activations kept on the GPU; beyond this they are spilled to disk
ACTIVATION_BYTES_CPU = 2 << 30


class Cancelled(KvantError):
    pass


def plan_linears(model: nn.Module, recipe: Recipe, summary: Summary) -> dict[str, Scheme]:
    # full module name -> scheme for every targeted decoder-layer Linear; fails before any work on a bad group size
    shapes = {n: (m.out_features, m.in_features) for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    return plan_shapes(shapes, recipe, summary)


def _capture_first_inputs(model, samples, budget: ActivationBudget) -> tuple[Activations, list[dict]]:
    # hidden states entering layer 0 (model dtype, kept per the budget) and the layer's other keyword arguments
    hidden, kwargs_list = Activations(budget), []

    class Stop(Exception):
        pass

    def hook(_module, args, kwargs):
        h = args[0] if args else kwargs.pop("hidden_states")
        hidden.append(h.detach())
        kwargs_list.append({k: v for k, v in kwargs.items() if k not in ("hidden_states", "past_key_values")})
        raise Stop

    handle = model.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids in samples:
            try:
                with torch.no_grad():
                    model(ids.unsqueeze(0), use_cache=False)
            except Stop:
                pass
    finally:
        handle.remove()
    return hidden, kwargs_list


def _to(value, device, dtype):
    if isinstance(value, torch.Tensor):
        return value.to(device, dtype) if value.is_floating_point() else value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device, dtype) for k, v in value.items()}
    return value


def _run_layer(layer, hidden, kwargs_list, device, budget: ActivationBudget | None = None) -> Activations | None:
    # every sample through one layer in fp32 on `device`; the outputs, in the stored dtype, in a new store (None
    # when no budget is given: a statistics-only pass)
    outs = None if budget is None else Activations(budget)
    with torch.no_grad():
        for h, kw in zip(hidden, kwargs_list):
            out = layer(h.to(device, torch.float32), **_to(kw, device, torch.float32))
            out = out[0] if isinstance(out, tuple) else out
            if outs is not None:
                outs.append(out.to(h.dtype))
    return outs


def _hooked(linears: dict[str, nn.Linear], observers: dict[str, list]):
    # forward hooks feeding each Linear's input to its observers; returns the handles
    handles = []
    for key, obs in observers.items():
        def hook(_m, args, _out, obs=obs):
            for o in obs:
                o.update(args[0])
        handles.append(linears[key].register_forward_hook(hook))
    return handles


def _relative_error(ref: list[torch.Tensor], out: list[torch.Tensor]) -> float:
    num = sum(float((a.float() - b.float()).pow(2).sum()) for a, b in zip(ref, out))
    den = sum(float(a.float().pow(2).sum()) for a in ref)
    return num / max(den, 1e-30)


def default_activation_budget(device: torch.device) -> int:
    # bytes of calibration activations kept on the device (an 8B model's 128 x 2048 tokens are 2 GiB per pass)
    return ACTIVATION_BYTES_CUDA if torch.device(device).type == "cuda" else ACTIVATION_BYTES_CPU


def quantize_layers(model, recipe: Recipe, plan: dict[str, Scheme], calib: CalibrationSet | None, device,
                    *, progress=None, cancel: threading.Event | None = None, summary: Summary,
                    checkpoint: Checkpoint | None = None, sink=None, activation_budget: int | None = None) -> dict:
    """Returns {checkpoint name: tensor} for every decoder-layer tensor (quantized Linears in compressed-tensors
    form, the rest in the model dtype) plus the FP8 KV-cache scales.

    With `checkpoint`, `model` is a meta skeleton whose embeddings are real: each decoder layer is read from the
    checkpoint just before its turn and freed after it. With `sink`, each finished layer's tensors go to
    `sink(tensors)` at once and the returned dict stays empty. Calibration activations stay on `device` up to
    `activation_budget` bytes and are spilled to disk beyond."""
    budget = ActivationBudget(device, default_activation_budget(device) if activation_budget is None
                              else activation_budget)
    try:
        return _quantize_layers(model, recipe, plan, calib, device, progress, cancel, summary, checkpoint,
                                sink, budget)
    finally:
        budget.close()


def _quantize_layers(model, recipe, plan, calib, device, progress, cancel, summary, checkpoint, sink, budget):
    dtype = model.dtype
    layers = model.model.layers
    tensors: dict[str, torch.Tensor] = {}
    emit = tensors.update if sink is None else sink
    hidden, kwargs_list = ([], [])
    if calib is not None:
        hidden, kwargs_list = _capture_first_inputs(model, calib.input_ids, budget)
    if checkpoint is not None:
        release(model.model.embed_tokens)  # only the first layer's inputs needed it
    kv = KVObserver() if recipe.kv_cache_scheme == "fp8" else None
    start = time.monotonic()
    bar = tqdm(total=len(layers), desc="quantize", unit="layer", leave=False)
    for i, layer in enumerate(layers):
        if cancel is not None and cancel.is_set():
            raise Cancelled("quantization cancelled")
        prefix = f"model.layers.{i}."
        if checkpoint is not None:
            checkpoint.materialize(layer, prefix)
        out, hidden, error = _quantize_layer(layer, prefix, i, model.config, dtype, recipe, plan, calib is not None,
                                             hidden, kwargs_list, device, kv, budget)
        summary.layer_errors.append(error)
        emit(out)
        if checkpoint is not None:
            release(layer)
        bar.update(1)
        elapsed = time.monotonic() - start
        eta = elapsed / (i + 1) * (len(layers) - i - 1)
        if progress is not None:
            progress(f"layer {i + 1}/{len(layers)} (ETA {eta:.0f}s)", (i + 1) / len(layers))
    bar.close()
    return tensors


def _propagate(layer, hidden, kwargs_list, device, budget):
    # the next layer's inputs; the old ones are freed (their budget handed back)
    out = _run_layer(layer, hidden, kwargs_list, device, budget)
    hidden.free()
    return out


def _quantize_layer(layer, prefix, i, config, dtype, recipe, plan, calibrated, hidden, kwargs_list, device, kv,
                    budget) -> tuple[dict, object, float]:
    # one decoder layer: (its checkpoint tensors, the next layer's inputs, relative output error or NaN)
    tensors: dict[str, torch.Tensor] = {}
    linears = {n: m for n, m in layer.named_modules() if prefix + n in plan}
    if not linears:  # nothing targeted here: pass the layer through unchanged
        tensors.update({prefix + n: t.detach().to("cpu", dtype) for n, t in layer.state_dict().items()})
        if calibrated:
            layer.to(device, torch.float32)
            with observing(config, kv) if kv is not None else nullcontext():
                hidden = _propagate(layer, hidden, kwargs_list, device, budget)
            layer.to("cpu", dtype)
        if kv is not None:
            tensors.update({f"{prefix}self_attn.{k}": t for k, t in kv.scales(i, dtype).items()})
        return tensors, hidden, float("nan")
    layer.to(device, torch.float32)
    schemes = {n: plan[prefix + n] for n in linears}
    args_of = {id(m): schemes[n].weights for n, m in linears.items()}
    # statistics for smoothing
    if calibrated and (recipe.smoothing_strength is not None or recipe.uses_awq):
        keys = ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")
        per_update = max(1, 2 * AWQ_TOKENS // len(hidden))
        obs = {k: [ChannelAbsMax() if recipe.smoothing_strength is not None else TokenSample(AWQ_TOKENS, per_update)]
               for k in keys}
        handles = _hooked(dict(layer.named_modules()), obs)
        try:
            _run_layer(layer, hidden, kwargs_list, device)
        finally:
            for h in handles:
                h.remove()
        if recipe.smoothing_strength is not None:
            smooth_layer(layer, {k: o[0].value for k, o in obs.items()}, recipe.smoothing_strength)
        else:
            inputs = {k: o[0].value().to(device) for k, o in obs.items()}
            awq_layer(layer, inputs, lambda m: args_of[id(m)], dtype, n_grid=recipe.n_grid,
                      duo_scaling=recipe.duo_scaling, clip=recipe.clip_search)
    # statistics for quantization, and the reference outputs
    hessians, act_max, ref = {}, {}, None
    if calibrated:
        obs = {}
        for n, m in linears.items():
            if recipe.uses_gptq:
                hessians[n] = Hessian(m.in_features, device)
                obs.setdefault(n, []).append(hessians[n])
            if schemes[n].needs_activation_stats:
                act_max[n] = AbsMax()
                obs.setdefault(n, []).append(act_max[n])
        handles = _hooked(linears, obs)
        try:
            with observing(config, kv) if kv is not None else nullcontext():
                ref = _run_layer(layer, hidden, kwargs_list, device, budget)
        finally:
            for h in handles:
                h.remove()
    # quantize
    for n, m in linears.items():
        h = hessians.pop(n).value() if n in hessians else None
        q, deq, _ = quantize_weight(m.weight.detach().float(), schemes[n], dtype, h,
                                    dampening_frac=recipe.dampening_frac, block_size=recipe.block_size,
                                    actorder=recipe.actorder is not None)
        del h
        with torch.no_grad():
            m.weight.copy_(deq.to(m.weight.device))
        for t, v in q.items():
            tensors[f"{prefix}{n}.{t}"] = v.cpu()
        if n in act_max:
            tensors[f"{prefix}{n}.input_scale"] = torch.tensor([max(act_max[n].value, 1e-6) / FP8_MAX], dtype=dtype)
        if m.bias is not None:
            tensors[f"{prefix}{n}.bias"] = m.bias.detach().to("cpu", dtype)
    for n, t in layer.state_dict().items():
        owner = n.rsplit(".", 1)[0]
        if owner not in linears:
            tensors[prefix + n] = t.detach().to("cpu", dtype)
    if kv is not None:
        for name, t in kv.scales(i, dtype).items():
            tensors[f"{prefix}self_attn.{name}"] = t
    # propagate with the quantized weights
    error = float("nan")
    if calibrated:
        hidden = _propagate(layer, hidden, kwargs_list, device, budget)
        error = _relative_error(ref, hidden)
        ref.free()
    layer.to("cpu", dtype)
    return tensors, hidden, error
