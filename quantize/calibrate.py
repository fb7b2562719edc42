"""The layer-by-layer loop: capture the first decoder layer's inputs, then for each decoder layer on the accelerator:
collect statistics, smooth (SmoothQuant/AWQ), quantize (RTN/GPTQ), re-run to feed the next layer the quantized
layer's outputs."""
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from kvant.artifact.progress import CancelToken, Progress, eta_message, silent
from kvant.kernels.formats import FP8_MAX
from kvant.quantize.awq import awq_layer
from kvant.quantize.calibration_data import CalibrationSet
from kvant.quantize.kv_cache import KVObserver, observing
from kvant.quantize.candidates import unit_of
from kvant.quantize.linear_quant import can_stack, quantize_stacked, quantize_weight
from kvant.quantize.observers import AbsMax, ChannelAbsMax, Hessian, TokenSample
from kvant.quantize.plan import Summary, plan_shapes
from kvant.quantize.recipe import Recipe
from kvant.artifact.schemes import Scheme
from kvant.quantize.smoothquant import smooth_layer
from kvant.quantize.streaming import Activations, ActivationBudget, Checkpoint, release

AWQ_TOKENS = 4096  # sampled input rows per Linear for AWQ's searches
ACTIVATION_BYTES_CUDA = 4 << 30  # calibration activations kept on the GPU; beyond this they are spilled to disk
ACTIVATION_BYTES_CPU = 2 << 30


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


@dataclass(slots=True)
class _Feed:
    """What enters the current decoder layer, one entry per calibration sample (model dtype, on the device up to the
    activation budget, spilled to disk beyond), and what the layer's stats passes observe."""
    hidden: Activations  # each [1, S, H]
    kwargs: list[dict]  # the layer's other keyword arguments (position embeddings, mask)
    kv: KVObserver | None  # FP8 KV-cache scales, observed on the reference pass
    config: object  # the HF config whose attention implementation `observing` swaps
    budget: ActivationBudget

    def run(self, layer, device, observers: dict[str, list] | None = None, observe_kv: bool = False,
            keep: bool = True) -> Activations | None:
        # every sample through `layer`, with `observers` hooked on its Linears; returns the outputs when `keep`
        handles = _hooked(dict(layer.named_modules()), observers or {})
        try:
            with observing(self.config, self.kv) if observe_kv and self.kv is not None else nullcontext():
                return _run_layer(layer, self.hidden, self.kwargs, device, self.budget if keep else None)
        finally:
            for h in handles:
                h.remove()

    def advance(self, layer, device, observe_kv: bool = False) -> None:
        # the layer's outputs become the next layer's inputs; the old inputs' budget is handed back
        out = self.run(layer, device, observe_kv=observe_kv)
        self.hidden.free()
        self.hidden = out


def default_activation_budget(device) -> int:
    # bytes of calibration activations kept on the device (an 8B model's 128 x 2048 tokens are 2 GiB per pass)
    return ACTIVATION_BYTES_CUDA if torch.device(device).type == "cuda" else ACTIVATION_BYTES_CPU


def quantize_layers(model, recipe: Recipe, plan: dict[str, Scheme], calib: CalibrationSet | None, device,
                    *, progress: Progress | None = None, cancel: CancelToken | None = None, summary: Summary,
                    checkpoint: Checkpoint | None = None, sink=None, activation_budget: int | None = None) -> dict:
    """Returns {checkpoint name: tensor} for every decoder-layer tensor (quantized Linears in compressed-tensors
    form, the rest in the model dtype) plus the FP8 KV-cache scales. Stops with `Cancelled` between layers.

    With `checkpoint`, `model` is a meta skeleton whose embeddings are real: each decoder layer is read from the
    checkpoint just before its turn and freed after it. With `sink`, each finished layer's tensors go to
    `sink(tensors)` at once and the returned dict stays empty. Calibration activations stay on `device` up to
    `activation_budget` bytes and are spilled to disk beyond."""
    budget = ActivationBudget(device, default_activation_budget(device) if activation_budget is None
                              else activation_budget)
    try:
        return _quantize_layers(model, recipe, plan, calib, device, progress or silent, cancel or CancelToken(),
                                summary, checkpoint, sink, budget)
    finally:
        budget.close()


def _quantize_layers(model, recipe, plan, calib, device, progress, cancel, summary, checkpoint, sink, budget):
    dtype, layers = model.dtype, model.model.layers
    kv = KVObserver() if recipe.kv_cache_scheme == "fp8" else None
    feed = None
    if calib is not None:
        feed = _Feed(*_capture_first_inputs(model, calib.input_ids, budget), kv=kv, config=model.config,
                     budget=budget)
    if checkpoint is not None:
        release(model.model.embed_tokens)  # only the first layer's inputs needed it
    tensors: dict[str, torch.Tensor] = {}
    emit = tensors.update if sink is None else sink
    started = time.monotonic()
    for i, layer in enumerate(layers):
        cancel.raise_if_cancelled("quantization")
        prefix = f"model.layers.{i}."
        if checkpoint is not None:
            checkpoint.materialize(layer, prefix)
        schemes = {n: plan[prefix + n] for n, _ in layer.named_modules() if prefix + n in plan}
        out: dict[str, torch.Tensor] = {}
        if schemes:
            error = _quantize_layer(layer, prefix, schemes, recipe, feed, device, dtype, out)
        else:
            error = _pass_layer(layer, prefix, feed, device, dtype, out)
        if kv is not None:
            out.update({f"{prefix}self_attn.{k}": t for k, t in kv.scales(i, dtype).items()})
        emit(out)
        if checkpoint is not None:
            release(layer)
        summary.layer_errors.append(error)
        progress("quantize", i + 1, len(layers), eta_message("layer", i + 1, len(layers), started))
    return tensors


def _pass_layer(layer, prefix: str, feed: _Feed | None, device, dtype, tensors: dict) -> float:
    # nothing targeted here: the layer's tensors unchanged, and its outputs feed the next layer
    tensors.update({prefix + n: t.detach().to("cpu", dtype) for n, t in layer.state_dict().items()})
    if feed is not None:
        layer.to(device, torch.float32)
        feed.advance(layer, device, observe_kv=True)
        layer.to("cpu", dtype)
    return float("nan")


def _quantize_layer(layer, prefix: str, schemes: dict[str, Scheme], recipe: Recipe, feed: _Feed | None, device,
                    dtype, tensors: dict) -> float:
    # smooth, observe, quantize and propagate one decoder layer; returns its output's relative error (nan: no data)
    layer.to(device, torch.float32)
    linears = {n: m for n, m in layer.named_modules() if n in schemes}
    if feed is not None and (recipe.smoothing_strength is not None or recipe.uses_awq):
        _smooth(layer, linears, schemes, recipe, feed, device, dtype)
    hessians, act_max, ref = {}, {}, None
    groups = _stack_groups(linears, schemes) if feed is not None and recipe.uses_gptq else [[n] for n in linears]
    if feed is not None:
        hessians, act_max, observers = _quant_observers(linears, schemes, recipe, device, groups)
        ref = feed.run(layer, device, observers, observe_kv=True)
    for group in groups:
        if len(group) == 1:
            n = group[0]
            tensors.update(_quantize_linear(prefix + n, linears[n], schemes[n], recipe, dtype, hessians.get(n),
                                            act_max.get(n)))
            continue
        stacked = quantize_stacked([linears[n].weight.detach().float() for n in group], schemes[group[0]], dtype,
                                   hessians[group[0]].value(), dampening_frac=recipe.dampening_frac,
                                   block_size=recipe.block_size, actorder=recipe.actorder is not None,
                                   observer=recipe.observer)
        for n, (q, deq) in zip(group, stacked):
            tensors.update(_store(prefix + n, linears[n], q, deq, dtype, act_max.get(n)))
    tensors.update({prefix + n: t.detach().to("cpu", dtype) for n, t in layer.state_dict().items()
                    if n.rsplit(".", 1)[0] not in linears})
    error = float("nan")
    if feed is not None:  # propagate with the quantized weights
        feed.advance(layer, device)
        error = _relative_error(ref, feed.hidden)
        ref.free()
    layer.to("cpu", dtype)
    return error


def _smooth(layer, linears: dict[str, nn.Linear], schemes: dict[str, Scheme], recipe: Recipe, feed: _Feed, device,
            dtype) -> None:
    # SmoothQuant from per-channel input maxima, or AWQ's searches over sampled input rows
    keys = ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")
    per_update = max(1, 2 * AWQ_TOKENS // len(feed.hidden))
    obs = {k: [ChannelAbsMax() if recipe.smoothing_strength is not None else TokenSample(AWQ_TOKENS, per_update)]
           for k in keys}
    feed.run(layer, device, obs, keep=False)
    if recipe.smoothing_strength is not None:
        smooth_layer(layer, {k: o[0].value for k, o in obs.items()}, recipe.smoothing_strength)
    else:
        args_of = {id(m): schemes[n].weights for n, m in linears.items()}
        inputs = {k: o[0].value().to(device) for k, o in obs.items()}
        awq_layer(layer, inputs, lambda m: args_of[id(m)], dtype, n_grid=recipe.n_grid,
                  duo_scaling=recipe.duo_scaling, clip=recipe.clip_search)


def _stack_groups(linears: dict[str, nn.Linear], schemes: dict[str, Scheme]) -> list[list[str]]:
    # Linears GPTQ quantizes as one matrix: same input (the engine's merged unit: q/k/v, gate/up) and same per-row
    # scheme; every other Linear alone
    groups: list[list[str]] = []
    for n in linears:
        for g in groups:
            if unit_of(g[0]) == unit_of(n) != g[0] and schemes[g[0]] == schemes[n] and can_stack(schemes[n]):
                g.append(n)
                break
        else:
            groups.append([n])
    return groups


def _quant_observers(linears: dict[str, nn.Linear], schemes: dict[str, Scheme], recipe: Recipe, device,
                     groups: list[list[str]]):
    # GPTQ's Hessians (one per group: its Linears read the same input) and static activation maxima, and the
    # observer lists that feed them
    hessians, act_max, observers = {}, {}, {}
    for g in groups:
        if recipe.uses_gptq:
            hessians[g[0]] = Hessian(linears[g[0]].in_features, device)
            observers.setdefault(g[0], []).append(hessians[g[0]])
    for n in linears:
        if schemes[n].needs_activation_stats:
            act_max[n] = AbsMax()
            observers.setdefault(n, []).append(act_max[n])
    return hessians, act_max, observers


def _quantize_linear(name: str, m: nn.Linear, scheme: Scheme, recipe: Recipe, dtype, hessian: Hessian | None,
                     act_max: AbsMax | None) -> dict[str, torch.Tensor]:
    # quantizes `m` (its weight becomes the dequantized one, for propagation); returns its checkpoint tensors
    h = hessian.value() if hessian is not None else None
    q, deq, _ = quantize_weight(m.weight.detach().float(), scheme, dtype, h, dampening_frac=recipe.dampening_frac,
                                block_size=recipe.block_size, actorder=recipe.actorder is not None,
                                observer=recipe.observer)
    return _store(name, m, q, deq, dtype, act_max)


def _store(name: str, m: nn.Linear, q: dict[str, torch.Tensor], deq: torch.Tensor, dtype,
           act_max: AbsMax | None) -> dict[str, torch.Tensor]:
    # `m` takes the dequantized weight (for propagation); returns its checkpoint tensors
    with torch.no_grad():
        m.weight.copy_(deq.to(m.weight.device))
    out = {f"{name}.{t}": v.cpu() for t, v in q.items()}
    if act_max is not None:
        out[f"{name}.input_scale"] = torch.tensor([max(act_max.value, 1e-6) / FP8_MAX], dtype=dtype)
    if m.bias is not None:
        out[f"{name}.bias"] = m.bias.detach().to("cpu", dtype)
    return out
