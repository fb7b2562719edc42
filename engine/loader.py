"""Build kvant's model from a folder (HF safetensors or a compressed-tensors artifact) or from a config alone."""
import json
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors import SafetensorError, safe_open

from kvant.engine.config import ModelConfig, load_config_file  # noqa: F401 (re-exported)
from kvant.artifact.errors import KvantError
from kvant.engine.model import STACKED_PROJECTIONS, CausalLM, stacked_output_sizes, stacked_parts
from kvant.kernels.int4_pack import pack_int4, unpack_int4

# checkpoint tensors with no kvant counterpart (precomputed rotary tables of old exports)
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
REOPEN_BYTES = 1 << 30  # bytes read through one mapping of a weight file before it is closed and reopened
# older FP8-KV checkpoints put the cache scales on the projections (vLLM remaps them the same way)
KV_SCALE_ALIASES = {"k_proj.output_scale": "k_scale", "v_proj.output_scale": "v_scale"}


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX on x86, the BF16 extension on Arm (Linux /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = {w for line in f if line.lower().startswith(("flags", "features")) for w in line.split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_dtype(dtype: str | torch.dtype | None, config: ModelConfig, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return getattr(torch, config.torch_dtype)
        # CPU: a bf16 checkpoint stays bf16 where the CPU multiplies bf16 natively (half the bytes per step; HF
        # transformers' "auto" keeps it too); elsewhere bf16 GEMMs are emulated and slower than float32
        return torch.bfloat16 if config.torch_dtype == "bfloat16" and cpu_has_native_bf16() else torch.float32
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


def iter_safetensors(files: Iterable[Path], device: str | torch.device = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of the files, read straight onto `device` one tensor at a time. Each file is
    reopened every REOPEN_BYTES so that no more than that of it stays mapped (and counted in host RSS) at once."""
    device = torch.device(device)
    where = f"cuda:{device.index or 0}" if device.type == "cuda" else str(device)
    for file in files:
        if not file.exists():
            raise KvantError(f"weight file {file} is missing")
        try:
            with safe_open(str(file), framework="pt") as f:
                keys = list(f.keys())
            i = 0
            while i < len(keys):
                mapped = 0
                with safe_open(str(file), framework="pt", device=where) as f:
                    while i < len(keys) and mapped < REOPEN_BYTES:
                        name = keys[i]
                        t = f.get_tensor(name)
                        mapped += t.numel() * t.element_size()
                        i += 1
                        yield name, t
        except SafetensorError as exc:
            raise KvantError(f"cannot read {file}: corrupted or truncated safetensors ({exc})") from None


def _target_name(name: str) -> str:
    for old, new in KV_SCALE_ALIASES.items():
        if name.endswith(old):
            return name[: -len(old)] + "attn." + new
    if name.endswith(("self_attn.k_scale", "self_attn.v_scale")):
        return name[: -len("k_scale")] + "attn." + name[-len("k_scale"):]
    return name


def _stacked_target(name: str) -> tuple[str, int | None]:
    """A checkpoint tensor name -> (model tensor name, part index in its merged projection or None)."""
    owner, _, attr = name.rpartition(".")
    parent, _, leaf = owner.rpartition(".")
    if leaf in STACKED_PROJECTIONS:
        merged, part = STACKED_PROJECTIONS[leaf]
        return f"{parent}.{merged}.{attr}", part
    return name, None


def _pack_rows(q: torch.Tensor) -> torch.Tensor:
    # int8 [N, G] in [-8, 7] -> int32 [ceil(N / 8), G], packed along dim 0 (compressed-tensors zero points)
    pad = -q.shape[0] % 8
    if pad:
        q = torch.cat([q, q.new_zeros(pad, q.shape[1])])
    return pack_int4(q.t().contiguous()).t().contiguous()


def load_part(target: torch.Tensor, attr: str, tensor: torch.Tensor, first: int, rows: int, total: int,
               raw_name: str) -> None:
    """Copy one part (q/k/v or gate/up) of a merged projection into its rows of `target`."""
    if attr == "weight_shape":  # [rows, K] on disk; the merged module keeps [total, K]
        if tensor.numel() != 2 or int(tensor[0]) != rows:
            raise KvantError(f"checkpoint tensor {raw_name!r} says shape {tensor.tolist()}, expected {rows} rows")
        target.copy_(torch.tensor([total, int(tensor[1])]))
        return
    if attr == "input_scale":
        # every part sees the same input, so calibration saw the same activations; should the static scales still
        # differ, the largest one is kept: it never clips what any part's scale kept in range
        if tensor.numel() != 1:
            raise KvantError(f"checkpoint tensor {raw_name!r} must hold one value, got shape {tuple(tensor.shape)}")
        value = tensor.reshape(1).to(target.dtype)
        target.copy_(value if first == 0 else torch.maximum(target.reshape(1), value).reshape(target.shape))
        return
    if attr == "weight_zero_point":  # packed 8 per int32 along the output rows: [ceil(rows / 8), groups]
        if first % 8 == 0 and (rows % 8 == 0 or first + rows == total):
            part = target[first // 8:first // 8 + tensor.shape[0]]
            _check_shape(part, tensor, raw_name)
            part.copy_(tensor)
        else:  # the part starts or ends inside a word: merge unpacked rows, then pack again
            if tuple(tensor.shape) != (-(-rows // 8), target.shape[1]):
                raise KvantError(f"checkpoint tensor {raw_name!r} has shape {tuple(tensor.shape)}, "
                                 f"the model expects {(-(-rows // 8), target.shape[1])}")
            full = unpack_int4(target.t().contiguous(), total).t().contiguous()
            full[first:first + rows] = unpack_int4(tensor.t().contiguous(), rows).t()
            target.copy_(_pack_rows(full))
        return
    if attr == "weight_scale" and tensor.numel() == 1 and target.shape[0] == total:
        target[first:first + rows].fill_(float(tensor.reshape(-1)[0]))  # per-tensor -> per-row: exact, no requant
        return
    part = target[first:first + rows]
    _check_shape(part, tensor, raw_name)
    part.copy_(tensor)


def _check_shape(target: torch.Tensor, tensor: torch.Tensor, raw_name: str) -> None:
    if tuple(target.shape) != tuple(tensor.shape):
        raise KvantError(f"checkpoint tensor {raw_name!r} has shape {tuple(tensor.shape)}, "
                         f"the model expects {tuple(target.shape)}")


def load_weights(model: CausalLM, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Copy named checkpoint tensors into the model; every model tensor (every part of a merged one) must be covered
    exactly once. Checkpoint q/k/v and gate/up land in row slices of the merged qkv_proj / gate_up_proj."""
    params = dict(model.named_parameters())
    params.update(model.named_buffers())
    attn_scales = {f"model.layers.{i}.self_attn.attn": a for i, a in enumerate(model.attention_layers())}
    sizes = stacked_output_sizes(model.config)
    expected: set[tuple[str, int | None]] = set()
    for n in params:
        if n.endswith("cos_sin"):
            continue
        leaf = n.rpartition(".")[0].rpartition(".")[2]
        parts = range(len(sizes[leaf])) if leaf in sizes else (None,)
        expected.update((n, p) for p in parts)
    if model.config.tie_word_embeddings:
        expected.discard(("lm_head.weight", None))
    seen: set[tuple[str, int | None]] = set()
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
        name, part = _stacked_target(name)
        owner = name.rpartition(".")[0]
        target = params.get(name)
        if target is None:
            raise KvantError(f"checkpoint tensor {raw_name!r} has no place in a {model.config.architecture} model")
        if (name, part) in seen:
            raise KvantError(f"checkpoint tensor {raw_name!r} appears twice")
        with torch.no_grad():
            if part is None:
                _check_shape(target, tensor, raw_name)
                target.copy_(tensor)
            else:
                part_sizes = sizes[owner.rpartition(".")[2]]
                load_part(target, attr, tensor, sum(part_sizes[:part]), part_sizes[part], sum(part_sizes), raw_name)
        seen.add((name, part))
    missing = sorted({_part_name(n, p, model) for n, p in expected - seen})
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise KvantError(f"checkpoint lacks {', '.join(missing[:3])}{more}")
    process_weights_after_loading(model)


def _part_name(name: str, part: int | None, model: CausalLM) -> str:
    # the checkpoint name a missing (merged) tensor would have had
    if part is None:
        return name
    owner, _, attr = name.rpartition(".")
    return f"{stacked_parts(model.config, owner)[part][0]}.{attr}"


def process_weights_after_loading(model: torch.nn.Module) -> None:
    """Once every weight is in place: each module that defines `process_weights_after_loading()` (vLLM's name)
    may convert its tensors to a kernel's layout (e.g. repack INT4)."""
    for module in model.modules():
        hook = getattr(module, "process_weights_after_loading", None)
        if callable(hook):
            hook()


def load_model(path: str | Path, dtype: str | torch.dtype | None = "auto", device: str | torch.device = "cpu",
               config: ModelConfig | None = None) -> CausalLM:
    path = Path(path)
    if not path.is_dir():
        raise KvantError(f"model folder {path} does not exist")
    config = config or ModelConfig.from_pretrained(path)
    device = torch.device(device)
    model = build_model(config, resolve_dtype(dtype, config, device), device)
    load_weights(model, iter_safetensors(_weight_files(path), device))
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
    process_weights_after_loading(model)
    return model
