"""Reading an artifact's manifest (kvant.json) and checking the base model against it, before any evaluation."""
import hashlib
import json
from pathlib import Path

from kvant.engine.errors import KvantError

MANIFEST = "kvant.json"
# fields that must agree for the base's scores to be a fair reference (same network, same tokenizer)
MATCHING_FIELDS = ("architecture", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


def read_manifest(artifact: Path) -> dict:
    artifact = Path(artifact)
    if not artifact.is_dir():
        raise KvantError(f"artifact {artifact} is not a folder")
    path = artifact / MANIFEST
    if not path.is_file():
        raise KvantError(f"{artifact} has no {MANIFEST}: not a kvant artifact (run `kvant quantize` first)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KvantError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or "base_model" not in manifest:
        raise KvantError(f"{path} has no base_model entry")
    return manifest


def base_reference(manifest: dict) -> str:
    base = manifest.get("base_model") or {}
    path = base.get("path")
    if path and Path(path).is_dir():
        return str(path)
    if base.get("name"):
        return str(base["name"])
    raise KvantError("the manifest's base_model has neither an existing path nor a name; pass --base")


def check_same_model(base_path: Path, artifact: Path) -> None:
    from kvant.engine.config import ModelConfig

    base, quant = ModelConfig.from_pretrained(base_path), ModelConfig.from_pretrained(artifact)
    for name in MATCHING_FIELDS:
        if getattr(base, name) != getattr(quant, name):
            raise KvantError(f"base model {base_path} does not match the artifact: {name} is "
                             f"{getattr(base, name)} in the base and {getattr(quant, name)} in the artifact")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def update_files(artifact: Path) -> None:
    try:
        from kvant.quantize.manifest import update_files as quantize_update_files
    except ImportError:
        quantize_update_files = None
    if quantize_update_files is not None:
        quantize_update_files(artifact)
        return
    # the manifest contract: "files" maps every file but kvant.json itself (relative, "/"-separated) to its sha256
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    manifest["files"] = {p.relative_to(artifact).as_posix(): _sha256(p) for p in sorted(artifact.rglob("*"))
                         if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp")}
    tmp = artifact / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(artifact / MANIFEST)
