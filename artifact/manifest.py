"""`kvant.json`: what an artifact is (scheme, base model, recipe, calibration) and the sha256 of every other file.

The one reader, writer and checker of the manifest: quantize writes it, eval and push refresh `files` after adding
theirs, and everyone reads it through `read`, which validates the fields the others rely on.
"""
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from kvant.artifact.errors import IntegrityError, KvantError
from kvant.artifact.schemes import SCHEME_NAMES

MANIFEST = "kvant.json"
EVAL_DIR = "eval"  # written by `kvant eval` after verification
RESULTS = f"{EVAL_DIR}/results.json"
CARD = "README.md"  # the model card; push rewrites it
FORMAT = 1
KV_CACHE_DTYPES = ("auto", "fp8")
# field -> type that `read` insists on (the rest are informative)
REQUIRED = {"scheme": str, "base_model": dict}


def hash_file(h, path: Path) -> str:
    """`h` (a hashlib object, maybe already fed a header) updated with the file's bytes, as hex."""
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    return hash_file(hashlib.sha256(), path)


def apply_umask(path: Path) -> None:
    """Give a file the mode any new file of the user's gets (0666 less the umask): safetensors, mkstemp and copies of
    owner-only files make 0600 ones."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def is_hidden(rel: str) -> bool:
    # dot-files/folders (download caches, editor state, temp files) are neither listed, checked nor pushed
    return any(part.startswith(".") for part in rel.split("/"))


def listed_files(folder: Path) -> list[str]:
    """Every file `files` covers: relative posix paths under `folder`, hidden ones and kvant.json left out."""
    rels = (p.relative_to(folder).as_posix() for p in sorted(Path(folder).rglob("*")) if p.is_file())
    return [rel for rel in rels if rel != MANIFEST and not is_hidden(rel)]


def file_hashes(folder: Path) -> dict[str, str]:
    return {rel: sha256_file(Path(folder) / rel) for rel in listed_files(folder)}


def build(*, scheme: str, kv_cache_dtype: str, base_model: dict, recipe: dict, calibration: dict,
          min_recovery: float, kvant_version: str) -> dict:
    if scheme not in SCHEME_NAMES:
        raise ValueError(f"scheme must be one of {SCHEME_NAMES}, got {scheme!r}")
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype must be auto or fp8, got {kv_cache_dtype!r}")
    return {"format": FORMAT, "kvant_version": kvant_version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "scheme": scheme,
            "kv_cache_dtype": kv_cache_dtype, "base_model": base_model, "recipe": recipe,
            "calibration": calibration, "gate": {"min_recovery": min_recovery}, "files": {}}


def write(folder: Path, manifest: dict) -> dict:
    # refreshes `files` from disk, then writes kvant.json through a temp file (never half-written)
    folder = Path(folder)
    manifest = dict(manifest, files=file_hashes(folder))
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(folder / MANIFEST)
    return manifest


def read(folder: Path) -> dict:
    """The validated manifest of the artifact folder; KvantError naming what is wrong otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KvantError(f"artifact {folder} is not a folder")
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KvantError(f"{folder} has no {MANIFEST}: not a kvant artifact (run `kvant quantize` first)") from None
    except json.JSONDecodeError as exc:
        raise KvantError(f"{path} is not valid JSON ({exc.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise KvantError(f"{path}: unsupported manifest format (expected {FORMAT})")
    for key, kind in REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            raise KvantError(f"{path}: field {key!r} is missing or not a {kind.__name__}")
    if manifest["scheme"] not in SCHEME_NAMES:
        raise KvantError(f"{path}: scheme must be one of {', '.join(SCHEME_NAMES)}, got {manifest['scheme']!r}")
    manifest.setdefault("files", {})
    if not isinstance(manifest["files"], dict):
        raise KvantError(f"{path}: field 'files' is not a dict")
    return manifest


def update_files(folder: str | Path) -> dict:
    folder = Path(folder)
    return write(folder, read(folder))


def verify(folder: str | Path, manifest: dict | None = None, *, skip: tuple[str, ...] = (), unlisted_ok: bool = False,
           digest=sha256_file, progress=None) -> None:
    """The one check of an artifact's files against its manifest. Raises IntegrityError (exit 4) naming the first
    file that is unlisted (unless `unlisted_ok`), missing, or whose sha256 differs, with both hashes.

    `skip`: files not checked (push regenerates README.md); `digest(path)`: the file's sha256 (the engine passes one
    that remembers verified files); progress("verify", done, total, message) after each file hashed."""
    folder = Path(folder)
    manifest = read(folder) if manifest is None else manifest
    listed = {rel: expected for rel, expected in manifest["files"].items() if not is_hidden(rel)}
    if not unlisted_ok:
        for rel in sorted(set(listed_files(folder)) - set(listed) - set(skip)):
            raise IntegrityError(f"{folder / rel} is not listed in {MANIFEST}: refresh the manifest or remove the file")
    todo = sorted(set(listed) - set(skip))
    for i, rel in enumerate(todo):
        path = folder / rel
        if not path.is_file():
            raise IntegrityError(f"{path} is listed in {MANIFEST} but missing")
        got = digest(path)
        if got != listed[rel]:
            raise IntegrityError(f"{path} does not match its sha256 in {MANIFEST}: file {got}, expected {listed[rel]}")
        if progress is not None:
            progress("verify", i + 1, len(todo), f"verified {rel}")


def evaluated_files(manifest: dict) -> dict[str, str]:
    """The hashes an evaluation is bound to: every listed file but eval's own output and the card (push rewrites
    it)."""
    return {rel: digest for rel, digest in sorted(manifest.get("files", {}).items())
            if not rel.startswith(EVAL_DIR + "/") and rel != CARD}


def base_reference(manifest: dict) -> str:
    """Where the artifact's base model is: its recorded path when that folder exists, else its name."""
    base = manifest.get("base_model") or {}
    path = base.get("path")
    if path and Path(path).is_dir():
        return str(path)
    if base.get("name"):
        return str(base["name"])
    raise KvantError("the manifest's base_model has neither an existing path nor a name; pass --base")
