"""What push needs from an artifact on disk: its manifest, checked file hashes, eval results, atomic rewrites."""
import hashlib
import json
import os
import tempfile
from pathlib import Path

from kvant.engine.errors import KvantError

MANIFEST = "kvant.json"
CARD = "README.md"
RESULTS = "eval/results.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    # the oid the Hub reports for a regular (non-LFS) file
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(artifact: Path) -> dict:
    path = artifact / MANIFEST
    if not artifact.is_dir():
        raise KvantError(f"artifact {artifact} is not a folder")
    if not path.is_file():
        raise KvantError(f"{artifact} has no {MANIFEST}: not a kvant artifact (run `kvant quantize` first)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KvantError(f"{path} is not valid JSON: {exc}") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != 1:
        raise KvantError(f"{path}: unsupported manifest format {fmt!r} (expected 1)")
    for key, kind in (("files", dict), ("base_model", dict), ("scheme", str)):
        if not isinstance(manifest.get(key), kind):
            raise KvantError(f"{path}: field {key!r} is missing or not a {kind.__name__}")
    return manifest


def local_files(artifact: Path) -> list[str]:
    """Every file under the artifact, relative posix paths, skipping dot-files/folders (caches, editor state)."""
    out = []
    for p in sorted(artifact.rglob("*")):
        rel = p.relative_to(artifact)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(rel.as_posix())
    return out


def verify_files(artifact: Path, manifest: dict, skip: tuple[str, ...] = (CARD,), progress=None) -> None:
    """Raises KvantError naming the first file whose sha256 differs from the manifest, or that is missing/unlisted."""
    listed = manifest["files"]
    on_disk = set(local_files(artifact)) - {MANIFEST}
    for rel in sorted(on_disk - set(listed) - set(skip)):
        raise KvantError(f"{artifact / rel} is not listed in {MANIFEST}: refresh the manifest or remove the file")
    todo = sorted(set(listed) - set(skip))
    for i, rel in enumerate(todo):
        if rel not in on_disk:
            raise KvantError(f"{artifact / rel} is listed in {MANIFEST} but missing")
        if sha256_file(artifact / rel) != listed[rel]:
            raise KvantError(f"{artifact / rel} does not match its sha256 in {MANIFEST}: the artifact was modified "
                             "after it was written")
        if progress is not None:
            progress("verify", (i + 1) / len(todo))


def read_results(artifact: Path) -> dict | None:
    path = artifact / RESULTS
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise KvantError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(results, dict) or not isinstance(results.get("passed"), bool) \
            or not isinstance(results.get("tasks"), list):
        raise KvantError(f"{path}: expected an object with 'tasks' (list) and 'passed' (bool)")
    return results


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_card(artifact: Path, manifest: dict, text: str) -> bool:
    """Writes README.md and records its sha256 in the manifest; returns whether anything changed on disk."""
    data = text.encode("utf-8")
    card = artifact / CARD
    digest = hashlib.sha256(data).hexdigest()
    unchanged = card.is_file() and card.read_bytes() == data and manifest["files"].get(CARD) == digest
    if unchanged:
        return False
    write_atomic(card, data)
    updated = dict(manifest, files=dict(sorted({**manifest["files"], CARD: digest}.items())))
    write_atomic(artifact / MANIFEST, (json.dumps(updated, indent=2) + "\n").encode("utf-8"))
    return True
