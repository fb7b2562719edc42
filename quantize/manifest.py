"""`kvant.json`: what an artifact is (scheme, base model, recipe, calibration) and the sha256 of every other file."""
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from kvant.engine.errors import KvantError

MANIFEST = "kvant.json"
FORMAT = 1
SCHEME_NAMES = ("w4a16", "w8a16", "w8a8-int8", "fp8-dynamic", "fp8-static")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST}


def build(*, scheme: str, kv_cache_dtype: str, base_model: dict, recipe: dict, calibration: dict,
          min_recovery: float, kvant_version: str) -> dict:
    if scheme not in SCHEME_NAMES:
        raise ValueError(f"scheme must be one of {SCHEME_NAMES}, got {scheme!r}")
    if kv_cache_dtype not in ("auto", "fp8"):
        raise ValueError(f"kv_cache_dtype must be auto or fp8, got {kv_cache_dtype!r}")
    return {"format": FORMAT, "kvant_version": kvant_version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "scheme": scheme,
            "kv_cache_dtype": kv_cache_dtype, "base_model": base_model, "recipe": recipe,
            "calibration": calibration, "gate": {"min_recovery": min_recovery}, "files": {}}


def write(folder: Path, manifest: dict) -> dict:
    # refreshes `files` from disk, then writes kvant.json through a temp file (never half-written)
    manifest = dict(manifest, files=file_hashes(folder))
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(folder / MANIFEST)
    return manifest


def read(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KvantError(f"{folder} has no {MANIFEST}: not a kvant artifact") from None
    except json.JSONDecodeError as exc:
        raise KvantError(f"{path} is not valid JSON ({exc.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise KvantError(f"{path}: unsupported manifest format (expected {FORMAT})")
    return manifest


def update_files(folder: str | Path) -> dict:
    folder = Path(folder)
    return write(folder, read(folder))


def verify(folder: str | Path) -> None:
    # raises KvantError naming the first missing, changed or unlisted file
    folder = Path(folder)
    listed = read(folder).get("files", {})
    present = file_hashes(folder)
    for rel, digest in listed.items():
        if rel not in present:
            raise KvantError(f"{folder / rel} is listed in {MANIFEST} but missing")
        if present[rel] != digest:
            raise KvantError(f"{folder / rel} changed since {MANIFEST} was written (sha256 mismatch)")
    for rel in present:
        if rel not in listed:
            raise KvantError(f"{folder / rel} is not listed in {MANIFEST}")
