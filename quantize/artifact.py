"""The compressed-tensors artifact: `quantization_config`, safetensors, tokenizer files, recipe, card, manifest,
written into a temp folder beside the output and renamed into place only when complete."""
import json
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from kvant.artifact.errors import KvantError
from kvant.artifact.manifest import apply_umask
from kvant.artifact.schemes import Scheme, kv_cache_config

# files copied from the base model folder when present
COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
          "generation_config.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")
# weights per output file: bounds the host memory held for tensors not yet written (transformers' limit is 5 GB)
MAX_SHARD_BYTES = 2 << 30
CT_VERSION = "0.20.0"  # the compressed-tensors schema written (and tested with transformers 5.23)


def _group_targets(names: list[str], all_groups: dict) -> list[str]:
    # "re:" patterns on the module-name suffix when every layer's same-named Linear shares this group
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
    others = {n.rsplit(".", 1)[-1] for g, ns in all_groups.items() if ns is not names for n in ns}
    if others.intersection(suffixes):
        return sorted(names)
    return [f"re:.*\\.({'|'.join(re.escape(s) for s in suffixes)})$"]


def quantization_config(plan: dict[str, Scheme], ignored: list[str], *, actorder: str | None,
                        kv_cache: bool) -> dict:
    groups: dict[Scheme, list[str]] = {}
    for name, scheme in plan.items():
        groups.setdefault(scheme, []).append(name)
    config_groups = {}
    for i, (scheme, names) in enumerate(groups.items()):
        targets = ["Linear"] if len(groups) == 1 else _group_targets(names, groups)
        ia = scheme.input_activations
        config_groups[f"group_{i}"] = {
            "targets": targets, "weights": scheme.weights.to_config(actorder), "format": scheme.format,
            "input_activations": None if ia is None else ia.to_config(), "output_activations": None}
    formats = {s.format for s in groups}
    config = {"config_groups": config_groups, "format": formats.pop() if len(formats) == 1 else "mixed-precision",
              "global_compression_ratio": None, "ignore": sorted(ignored),
              "kv_cache_scheme": kv_cache_config() if kv_cache else None, "quant_method": "compressed-tensors",
              "quantization_status": "compressed", "sparsity_config": {}, "transform_config": {},
              "version": CT_VERSION}
    validate_quantization_config(config)
    return config


def validate_quantization_config(config: dict) -> None:
    """Parse through compressed-tensors' own models (what transformers and vLLM load) and require that every field
    those models define reads back as written; a mismatch is a bug in the dict above, named in one line."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
    from pydantic import ValidationError

    try:
        groups = {name: QuantizationScheme(
            targets=g["targets"], weights=QuantizationArgs.model_validate(g["weights"]),
            input_activations=None if g["input_activations"] is None
            else QuantizationArgs.model_validate(g["input_activations"]), format=g["format"])
            for name, g in config["config_groups"].items()}
        kv = config["kv_cache_scheme"]
        parsed = QuantizationConfig(
            config_groups=groups, quant_method=config["quant_method"], format=config["format"],
            quantization_status=config["quantization_status"], ignore=config["ignore"],
            kv_cache_scheme=None if kv is None else QuantizationArgs.model_validate(kv),
            global_compression_ratio=config["global_compression_ratio"])
    except ValidationError as exc:
        raise KvantError(f"quantization_config rejected by compressed-tensors: {' '.join(str(exc).split())}") from exc
    _require_same(config, parsed.model_dump(mode="json"), "quantization_config")


def _require_same(written, parsed, where: str) -> None:
    # only keys both sides hold: compressed-tensors' models may know fewer fields than its newer schema writes
    if isinstance(written, dict) and isinstance(parsed, dict):
        for key in written.keys() & parsed.keys():
            _require_same(written[key], parsed[key], f"{where}.{key}")
    elif written != parsed:
        raise KvantError(f"{where}: compressed-tensors reads {parsed!r}, kvant wrote {written!r}")


@contextmanager
def staging(out: Path, force: bool):
    # yields a temp folder in out's parent; on success it replaces `out`, on any failure it is removed
    out = Path(out)
    if out.exists() and not force:
        raise KvantError(f"{out} already exists (use --force to overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.kvant-tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.kvant-old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)  # the previous artifact stays where it was
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_weights(folder: Path, tensors: dict[str, torch.Tensor], name: str = "model.safetensors") -> None:
    path = folder / name
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(path), metadata={"format": "pt"})
    apply_umask(path)


class ShardWriter:
    """Weights written as they are produced: tensors collect until they pass `max_shard_bytes`, then go to a shard
    file and are freed. One shard at the end is `model.safetensors`, byte for byte what `write_weights` writes;
    more become `model-0000k-of-0000n.safetensors` with transformers' `model.safetensors.index.json`."""

    def __init__(self, folder: Path, max_shard_bytes: int | None = None):
        self.folder = Path(folder)
        self.max_shard_bytes = MAX_SHARD_BYTES if max_shard_bytes is None else max_shard_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.shards: list[dict[str, int]] = []  # per written shard: tensor name -> bytes

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, t in tensors.items():
            if name in self.pending or any(name in s for s in self.shards):
                raise KvantError(f"tensor {name!r} written twice")
            self.pending[name] = t
            self.pending_bytes += t.numel() * t.element_size()
        if self.pending_bytes >= self.max_shard_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        write_weights(self.folder, self.pending, f"shard-{len(self.shards) + 1}.tmp")
        self.shards.append({k: v.numel() * v.element_size() for k, v in self.pending.items()})
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> None:
        if not self.shards:
            write_weights(self.folder, self.pending)
            self.pending, self.pending_bytes = {}, 0
            return
        self._flush()
        n = len(self.shards)
        weight_map = {}
        for k, sizes in enumerate(self.shards, 1):
            name = f"model-{k:05d}-of-{n:05d}.safetensors"
            (self.folder / f"shard-{k}.tmp").rename(self.folder / name)
            weight_map.update({t: name for t in sizes})
        index = {"metadata": {"total_size": sum(sum(s.values()) for s in self.shards)},
                 "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n",
                                                                  encoding="utf-8")


def write_config(folder: Path, base_config: dict, qconfig: dict) -> None:
    config = dict(base_config, quantization_config=qconfig)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def copy_base_files(src: Path, folder: Path) -> None:
    for name in COPIED:
        if (src / name).is_file():
            shutil.copyfile(src / name, folder / name)  # a new file: the user's umask, not the base's mode


def write_recipe(folder: Path, recipe: dict) -> None:
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
