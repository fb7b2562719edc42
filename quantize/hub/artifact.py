"""What push needs from an artifact on disk beyond its manifest: eval results, git blob ids, atomic rewrites."""
import hashlib
import json
import os
import tempfile
from pathlib import Path

from kvant.artifact import manifest as M
from kvant.artifact.errors import KvantError
from kvant.artifact.manifest import CARD, RESULTS


def git_blob_sha1(path: Path) -> str:
    # the oid the Hub reports for a regular (non-LFS) file
    return M.hash_file(hashlib.sha1(b"blob %d\0" % path.stat().st_size), path)


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
        M.apply_umask(Path(tmp))  # mkstemp makes 0600; the card gets the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_card(artifact: Path, manifest: dict, text: str) -> bool:
    """Writes README.md and records its sha256 in the manifest; returns whether anything changed on disk.

    Call only after kvant.artifact.manifest.verify: the manifest helper re-hashes every file, so it would also absorb other changes.
    """
    data = text.encode("utf-8")
    card = artifact / CARD
    unchanged = card.is_file() and card.read_bytes() == data \
        and manifest["files"].get(CARD) == hashlib.sha256(data).hexdigest()
    if unchanged:
        return False
    write_atomic(card, data)
    M.update_files(artifact)
    return True
