"""Per-layer sensitivity on the calibration set: for each engine unit (qkv, o_proj, gate_up, down_proj of every
decoder layer) and each candidate scheme, the KL divergence of the final next-token distributions from the base
model's when only that unit is quantized (round-to-nearest: cheap, and ranks layers as GPTQ would). Two ways:

- "kl" (`measure`): measured. One base pass keeps every decoder layer's input, then per (unit, candidate) one pass
  from the unit's layer to the logits: about (units x candidates / 2) forward passes.
- "fisher" (`estimate`): KL's second-order expansion, KL(p_w || p_w+d) ~ 1/2 d^T F d, with the diagonal of the
  Fisher information F estimated from a few backward passes with labels drawn from the model's own distribution;
  each (unit, candidate) then costs one weight quantization. Ten to a hundred times cheaper on a CPU; the test
  suite checks that it orders layers and candidates as the measured KL does.

Results are cached by a key over the model's files, the token ids, the candidates and the method, under
$KVANT_HOME/sensitivity/ and in the artifact (sensitivity.json)."""
import hashlib
import json
import time
from pathlib import Path

import torch
from torch import nn

from kvant.artifact.progress import CancelToken, Progress
from kvant.artifact.schemes import fallback_group_size
from kvant.quantize.candidates import BF16, scheme_for, units
from kvant.quantize.linear_quant import quantize_weight

FILE = "sensitivity.json"
FORMAT = 1


METHODS = ("fisher", "kl")
FISHER_DRAWS = 2  # label draws per sample: each is one backward pass


def cache_key(model_dir: Path, samples: list[torch.Tensor], candidates: tuple[str, ...], method: str = "kl") -> str:
    # the model's weight files (name, size, mtime), the token ids and the candidates: equal key, equal result
    h = hashlib.sha256(f"sensitivity-{FORMAT}".encode())
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for ids in samples:
        h.update(ids.to(torch.int64).numpy().tobytes())
        h.update(b"|")
    h.update(",".join(candidates).encode())
    h.update(method.encode())
    return h.hexdigest()


def load_cached(key: str, places: list[Path]) -> dict | None:
    # the first sensitivity.json among `places` with this key
    for path in places:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("format") == FORMAT and data.get("key") == key:
            return data
    return None


def cache_path(home: Path, key: str) -> Path:
    return Path(home) / "sensitivity" / f"{key[:16]}.json"


def save(path: Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(to_text(data), encoding="utf-8")
    tmp.replace(path)


def to_text(data: dict) -> str:
    return json.dumps(data, indent=1) + "\n"


def _layer_out(layer, h, kw):
    out = layer(h, **kw)
    return out[0] if isinstance(out, tuple) else out


def _log_probs(model, h: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(model.lm_head(model.model.norm(h)).float(), dim=-1)


def measure(model: nn.Module, samples: list[torch.Tensor], candidates: tuple[str, ...], *, scale_dtype=torch.bfloat16,
            progress: Progress | None = None, cancel: CancelToken | None = None) -> dict:
    """`model`: a transformers Llama-family model in fp32 on CPU (or any device); `samples`: token id tensors [L].
    Returns {"metric": "kl", "units": {unit: {candidate: mean KL per token}}, "shapes": {unit: [[out, in], ...]},
    "tokens", "time_s"}; bf16 is 0 by definition. A candidate whose group size divides no fallback is left out."""
    from kvant.quantize.calibrate import _capture_first_inputs, _to
    from kvant.quantize.streaming import ActivationBudget

    started = time.monotonic()
    device = next(model.parameters()).device
    layers = model.model.layers
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in n}
    by_unit = units({n: (m.out_features, m.in_features) for n, m in linears.items()})
    # no activation budget: this measurement keeps every layer's inputs in memory anyway (inputs[i] below)
    hidden, kwargs_list = _capture_first_inputs(model, samples, ActivationBudget(device, budget_bytes=1 << 62))
    kwargs_list = [_to(kw, device, torch.float32) for kw in kwargs_list]
    inputs = []  # inputs[i][s]: sample s entering layer i
    with torch.no_grad():
        h = [x.to(device, torch.float32) for x in hidden]
        for layer in layers:
            inputs.append(h)
            h = [_layer_out(layer, x, kw) for x, kw in zip(h, kwargs_list)]
        base = [_log_probs(model, x) for x in h]
    tokens = sum(int(b.shape[-2]) for b in base)
    result: dict[str, dict[str, float]] = {}
    todo = [(u, c) for u in by_unit for c in candidates if c != BF16]
    for done, (unit, cand) in enumerate(todo):
        if cancel is not None:
            cancel.raise_if_cancelled("sensitivity measurement")
        names = by_unit[unit]
        i = int(unit.split(".")[2])  # model.layers.<i>.
        kl = _unit_kl(model, [linears[n] for n in names], cand, scale_dtype, layers, i, inputs[i], kwargs_list, base,
                      tokens)
        if kl is not None:
            result.setdefault(unit, {})[cand] = kl
        if progress is not None:
            progress("sensitivity", done + 1, len(todo), f"sensitivity {done + 1}/{len(todo)}")
    for unit in by_unit:
        if BF16 in candidates:
            result.setdefault(unit, {})[BF16] = 0.0
    return {"format": FORMAT, "metric": "kl", "units": result, "tokens": tokens,
            "shapes": {u: [[linears[n].out_features, linears[n].in_features] for n in ns] for u, ns in by_unit.items()},
            "time_s": round(time.monotonic() - started, 2)}


def _unit_kl(model, mods, cand, scale_dtype, layers, first, h, kwargs_list, base, tokens) -> float | None:
    originals = [m.weight.detach().clone() for m in mods]
    try:
        with torch.no_grad():
            for m in mods:
                q = _candidate_weight(m, cand, scale_dtype)
                if q is None:
                    return None
                m.weight.copy_(q.to(m.weight.dtype))
            total = 0.0
            for x, kw, ref in zip(h, kwargs_list, base):
                for layer in layers[first:]:
                    x = _layer_out(layer, x, kw)
                logq = _log_probs(model, x)
                total += float((ref.exp() * (ref - logq)).sum())
            return total / tokens
    finally:
        with torch.no_grad():
            for m, w in zip(mods, originals):
                m.weight.copy_(w)


def _candidate_weight(m: nn.Linear, cand: str, scale_dtype) -> torch.Tensor | None:
    # the round-to-nearest dequantized weight of `m` under `cand` (fp32), None where no group size fits
    s = scheme_for(cand)
    if s.weights.strategy == "group":
        g = fallback_group_size(m.in_features, s.weights.group_size)
        if g is None:
            return None
        s = s.with_group_size(g)
    return quantize_weight(m.weight.detach().float(), s, scale_dtype)[1]


def fisher_diagonal(model: nn.Module, samples: list[torch.Tensor], draws: int = FISHER_DRAWS,
                    seed: int = 0, cancel: CancelToken | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """{Linear name: diagonal Fisher per token [out, in]} over the decoder-layer Linears, and the token count.
    Labels are drawn from the model's own next-token distribution, so each sequence's squared score gradient is an
    unbiased estimate of the sum of its tokens' Fisher diagonals."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in n}
    params = [m.weight for m in linears.values()]
    saved = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    acc = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    gen = torch.Generator().manual_seed(seed)
    device = params[0].device
    tokens = 0
    try:
        for ids in samples:
            if cancel is not None:
                cancel.raise_if_cancelled("sensitivity measurement")
            logp = torch.log_softmax(model(ids.unsqueeze(0).to(device), use_cache=False).logits[0].float(), dim=-1)
            tokens += int(ids.numel())
            for d in range(draws):
                labels = torch.multinomial(logp.detach().exp().cpu(), 1, generator=gen).to(device)
                score = logp.gather(1, labels).sum()
                grads = torch.autograd.grad(score, params, retain_graph=d < draws - 1)
                for a, g in zip(acc, grads):
                    a.add_(g.float().square(), alpha=1.0 / draws)
    finally:
        for p, flag in zip(model.parameters(), saved):
            p.requires_grad_(flag)
    return {n: a / tokens for n, a in zip(linears, acc)}, tokens


def estimate(model: nn.Module, samples: list[torch.Tensor], candidates: tuple[str, ...], *,
             scale_dtype=torch.bfloat16, progress: Progress | None = None, cancel: CancelToken | None = None) -> dict:
    """As `measure`, with each KL from the Fisher expansion: 1/2 sum F (w - q(w))^2 over the unit's weights."""
    started = time.monotonic()
    if progress is not None:
        progress("sensitivity", 0, 0, "sensitivity: Fisher information")
    fisher, tokens = fisher_diagonal(model, samples, cancel=cancel)
    linears = {n: m for n, m in model.named_modules() if n in fisher}
    by_unit = units({n: (m.out_features, m.in_features) for n, m in linears.items()})
    result: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for unit, names in by_unit.items():
            for cand in candidates:
                if cand == BF16:
                    result.setdefault(unit, {})[cand] = 0.0
                    continue
                total = 0.0
                for n in names:
                    q = _candidate_weight(linears[n], cand, scale_dtype)
                    if q is None:
                        break
                    total += 0.5 * float((fisher[n] * (linears[n].weight.float() - q).square()).sum())
                else:
                    result.setdefault(unit, {})[cand] = total
    return {"format": FORMAT, "metric": "kl-fisher", "units": result, "tokens": tokens,
            "shapes": {u: [[linears[n].out_features, linears[n].in_features] for n in ns] for u, ns in by_unit.items()},
            "time_s": round(time.monotonic() - started, 2)}
