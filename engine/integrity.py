"""Every file of a kvant artifact checked against the sha256 in its kvant.json before it is used.

A verified-once record under $KVANT_HOME maps (path, size, mtime_ns, inode) to the sha256 seen, so a warm start
re-hashes nothing; any change to a file's size, mtime or inode (a rewrite, a copy, `touch`) hashes it again.
"""
import json
import os
import sys
from pathlib import Path

from kvant.artifact import manifest as M
from kvant.artifact.errors import IntegrityError, KvantError
from kvant.artifact.manifest import MANIFEST, sha256_file

RECORD = "verified.json"


def _record_path() -> Path:
    from kvant.engine.registry import kvant_home

    return kvant_home() / RECORD


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def _load_record() -> dict[str, str]:
    try:
        data = json.loads(_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_record(record: dict[str, str]) -> None:
    path = _record_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs the next start a re-hash


def file_sha256(path: Path, record: dict[str, str]) -> str:
    key = _key(path)
    digest = record.get(key)
    if digest is None:
        digest = sha256_file(path)
        record[key] = digest
    return digest


def verify_artifact(folder: str | Path, skip: tuple[str, ...] = ()) -> bool:
    """kvant.artifact.manifest.verify with the verified-once record; files the manifest does not list are left alone.
    Returns False for a folder without kvant.json (a plain HF model: nothing to check), True once verified."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return False
    try:
        manifest = M.read(folder)
    except KvantError as exc:
        raise IntegrityError(f"cannot verify the artifact: {exc}") from None
    record = _load_record()
    before = len(record)
    try:
        M.verify(folder, manifest, skip=skip, unlisted_ok=True, digest=lambda path: file_sha256(path, record))
    finally:
        if len(record) != before:
            _save_record(record)
    return True


def check_or_warn(folder: str | Path, verify: bool) -> None:
    """What every loader calls: verify, or say loudly that verification was turned off."""
    if verify:
        verify_artifact(folder)
    elif (Path(folder) / MANIFEST).is_file():
        print(f"warning: --no-verify: {folder} is used without checking its files against {MANIFEST}",
              file=sys.stderr, flush=True)
