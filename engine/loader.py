"""Build kvant's model from a folder (HF safetensors or a compressed-tensors artifact) or from a config alone."""
import json
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors import SafetensorError, safe_open

from kvant.engine.config import ModelConfig, load_config_file  # noqa: F401 (re-exported)
from kvant.artifact.errors import KvantError
from kvant.engine.model import CausalLM

# checkpoint tensors with no kvant counterpart (precomputed rotary tables of old exports)
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# older FP8-KV checkpoints put the cache scales on the projections (vLLM remaps them the same way)
KV_SCALE_ALIASES = {"k_proj.output_scale": "k_scale", "v_proj.output_scale": "v_scale"}


def resolve_dtype(dtype: str | torch.dtype | None, config: ModelConfig, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return getattr(torch, config.torch_dtype) if device.type == "cuda" else torch.float32
    if not hasattr(torch, str(dtype)) or not isinstance(getattr(torch, str(dtype)), torch.dtype):
        raise ValueError(f"dtype must be auto, float32, float16 or bfloat16, got {dtype!r}")
    return getattr(torch, str(dtype))


def build_model(config: ModelConfig, dtype: torch.dtype, device: torch.device | str) -> CausalLM:
    """An uninitialized model with real storage on `device`; quantized layers swapped in per the config."""
    with torch.device("meta"):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = CausalLM(config)
        finally:
            torch.set_default_dtype(prev)
    if config.quantization_config:
        from kvant.engine.quant_linear import replace_linears

        replace_linears(model, config.quantization_config)
    model = model.to_empty(device=device)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb.reset()
    return model.eval()


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / n for n in names]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise KvantError(f"model folder {path} has no *.safetensors weights")
    return files


def iter_safetensors(files: Iterable[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    for file in files:
        if not file.exists():
            raise KvantError(f"weight file {file} is missing")
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        except SafetensorError as exc:
            raise KvantError(f"cannot read {file}: corrupted or truncated safetensors ({exc})") from None


def _target_name(name: str) -> str:
    for old, new in KV_SCALE_ALIASES.items():
        if name.endswith(old):
            return name[: -len(old)] + "attn." + new
    if name.endswith(("self_attn.k_scale", "self_attn.v_scale")):
        return name[: -len("k_scale")] + "attn." + name[-len("k_scale"):]
    return name


def load_weights(model: CausalLM, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Copy named checkpoint tensors into the model; every model tensor must be covered exactly once."""
    params = dict(model.named_parameters())
    params.update(model.named_buffers())
    attn_scales = {f"model.layers.{i}.self_attn.attn": a for i, a in enumerate(model.attention_layers())}
    expected = {n for n in params if not n.endswith("cos_sin")}
    if model.config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    seen: set[str] = set()
    for raw_name, tensor in tensors:
        if raw_name.endswith(IGNORED_SUFFIXES):
            continue
        name = _target_name(raw_name)
        owner, _, attr = name.rpartition(".")
        if owner in attn_scales and attr in ("k_scale", "v_scale"):
            setattr(attn_scales[owner], attr, float(tensor.float().reshape(-1)[0]))
            continue
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        target = params.get(name)
        if target is None:
            raise KvantError(f"checkpoint tensor {raw_name!r} has no place in a {model.config.architecture} model")
        if tuple(target.shape) != tuple(tensor.shape):
            raise KvantError(f"checkpoint tensor {raw_name!r} has shape {tuple(tensor.shape)}, "
                             f"the model expects {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(tensor)
        seen.add(name)
    missing = sorted(expected - seen)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise KvantError(f"checkpoint lacks {', '.join(missing[:3])}{more}")


def load_model(path: str | Path, dtype: str | torch.dtype | None = "auto", device: str | torch.device = "cpu",
               config: ModelConfig | None = None) -> CausalLM:
    path = Path(path)
    if not path.is_dir():
        raise KvantError(f"model folder {path} does not exist")
    config = config or ModelConfig.from_pretrained(path)
    device = torch.device(device)
    model = build_model(config, resolve_dtype(dtype, config, device), device)
    load_weights(model, iter_safetensors(_weight_files(path)))
    return model


def dummy_model(config: ModelConfig, dtype: str | torch.dtype | None = "auto", device: str | torch.device = "cpu",
                seed: int = 0) -> CausalLM:
    """Random weights from a config alone (no disk): for benchmarks and tests at real shapes."""
    device = torch.device(device)
    model = build_model(config, resolve_dtype(dtype, config, device), device)
    if device.type == "meta":  # shapes only: nothing to initialise
        return model
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif p.is_floating_point():
                p.normal_(0.0, 0.02, generator=gen)
    return model
