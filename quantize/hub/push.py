"""Upload a verified artifact with a regenerated model card to the Hugging Face Hub, sending only what changed."""
import glob
import logging
from dataclasses import dataclass
from pathlib import Path

from kvant.artifact import manifest as M
from kvant.artifact.card import card_text
from kvant.artifact.errors import IntegrityError, KvantError, NetworkError
from kvant.artifact.progress import CancelToken, Progress, silent
from kvant.quantize.hub import artifact as A

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PushResult:
    repo_id: str
    revision: str
    endpoint: str
    card: str
    files: tuple[tuple[str, int], ...]  # (path, size in bytes) of everything the repo should hold
    uploaded: tuple[str, ...]  # paths sent in this push; empty when the remote already matched
    commit_oid: str | None  # None: dry run or nothing to upload
    evaluated: bool
    gate_passed: bool | None  # None: not evaluated
    dry_run: bool
    extra_remote: tuple[str, ...] = ()  # files in the Hub repo that the artifact does not have (left in place)

    def __post_init__(self):
        if not self.dry_run and self.uploaded and self.commit_oid is None:
            raise ValueError("commit_oid must be set when files were uploaded")


def _check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"repo_id must be 'namespace/name', got {repo_id!r}")


def _resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise KvantError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def _remote_files(api, repo_id: str, revision: str) -> dict:
    from huggingface_hub.hf_api import RepoFile

    return {e.path: e for e in api.list_repo_tree(repo_id, revision=revision, recursive=True)
            if isinstance(e, RepoFile)}


def _changed(remote: dict, artifact: Path, paths: list[str], manifest: dict) -> list[str]:
    """Paths whose remote copy is missing or differs (LFS: sha256; regular files: git blob oid)."""
    out = []
    for rel in paths:
        entry = remote.get(rel)
        local = artifact / rel
        if entry is None or entry.size != local.stat().st_size:
            out.append(rel)
        elif entry.lfs is not None:
            digest = manifest["files"].get(rel) or M.sha256_file(local)
            if entry.lfs.sha256 != digest:
                out.append(rel)
        elif entry.blob_id != A.git_blob_sha1(local):
            out.append(rel)
    return out


def _sizes(artifact: Path, paths: list[str], card: str) -> tuple[tuple[str, int], ...]:
    return tuple((p, len(card.encode()) if p == M.CARD else (artifact / p).stat().st_size) for p in paths)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _http_error(exc: Exception, endpoint: str, repo_id: str) -> KvantError:
    from huggingface_hub.errors import HfHubHTTPError

    status = exc.response.status_code if isinstance(exc, HfHubHTTPError) and exc.response is not None else None
    if status == 401:
        return KvantError(f"authentication failed for {endpoint}: check HF_TOKEN")
    if status == 403:
        return KvantError(f"permission denied for {repo_id} on {endpoint}: check that HF_TOKEN may write there")
    return KvantError(f"upload to {endpoint} failed: {_first_line(exc)}")


def push(artifact: Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, dry_run: bool = False, force: bool = False, token: str | None = None,
         endpoint: str | None = None, progress: Progress | None = None, cancel: CancelToken | None = None
         ) -> PushResult:
    from huggingface_hub import HfApi, constants

    progress, cancel = progress or silent, cancel or CancelToken()
    artifact = Path(artifact)
    _check_repo_id(repo_id)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    revision = revision or "main"
    manifest = M.read(artifact)
    M.verify(artifact, manifest, skip=(M.CARD,), progress=progress)
    results = A.read_results(artifact)
    if results is None:
        logger.warning("%s has no %s: the card will say 'not evaluated'", artifact, A.RESULTS)
    elif "evaluated_files" not in results:
        logger.warning("%s predates kvant's weights binding: re-run `kvant eval` to bind it", A.RESULTS)
    elif results["evaluated_files"] != M.evaluated_files(manifest):
        changed = sorted(set(results["evaluated_files"].items()) ^ set(M.evaluated_files(manifest).items()))
        raise IntegrityError(f"{artifact / A.RESULTS} was computed on other files than kvant.json lists now "
                             f"(first: {changed[0][0]}): re-run `kvant eval` before pushing")
    if results is not None and not results["passed"] and not force:
        failed = ", ".join(t["task"] for t in results["tasks"] if not t.get("passed", True)) or "generative check"
        raise KvantError(f"{artifact} failed its eval gate ({failed}); pass --force to push it anyway")
    recipe_path = artifact / "recipe.yaml"
    recipe = recipe_path.read_text(encoding="utf-8") if recipe_path.is_file() else None  # the recipe as run
    card = card_text(manifest, results, repo_id, recipe)
    paths = sorted(p for p in set(manifest["files"]) | {M.CARD, M.MANIFEST} if not M.is_hidden(p))
    summary = dict(repo_id=repo_id, revision=revision, endpoint=endpoint, card=card,
                   files=_sizes(artifact, paths, card), evaluated=results is not None,
                   gate_passed=None if results is None else results["passed"])
    if dry_run:
        return PushResult(**summary, uploaded=(), commit_oid=None, dry_run=True)

    token = _resolve_token(token)
    if A.write_card(artifact, manifest, card):
        manifest = M.read(artifact)
        summary["files"] = _sizes(artifact, paths, card)
    api = HfApi(endpoint=endpoint, token=token, library_name="kvant")
    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    try:
        cancel.raise_if_cancelled("push")
        progress("connect", 0, 0, f"connecting to {endpoint}")
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        remote = _remote_files(api, repo_id, revision)
        todo = _changed(remote, artifact, paths, manifest)
        # e.g. shards of an earlier push; never deleted here, since a user may have added them on purpose
        summary["extra_remote"] = tuple(sorted(set(remote) - set(paths) - {".gitattributes"}))
        if summary["extra_remote"]:
            logger.warning("%s@%s also holds files this artifact lacks: %s", repo_id, revision,
                           ", ".join(summary["extra_remote"]))
        if not todo:
            logger.info("%s@%s already holds every file of %s: nothing to upload", repo_id, revision, artifact)
            return PushResult(**summary, uploaded=(), commit_oid=None, dry_run=False)
        cancel.raise_if_cancelled("push")  # the last point where nothing has reached the Hub
        progress("upload", 0, len(todo), f"uploading {len(todo)} of {len(paths)} files")
        base_name = manifest["base_model"].get("name")
        message = commit_message or f"Upload {manifest['scheme']} quantization of {base_name} (kvant)"
        info = api.upload_folder(repo_id=repo_id, folder_path=artifact, revision=revision,
                                 commit_message=message, allow_patterns=[glob.escape(p) for p in todo])
    except HfHubHTTPError as exc:  # the server answered with an error status
        raise _http_error(exc, endpoint, repo_id) from None
    except HTTPError as exc:  # no answer: refused, DNS, timeout
        raise NetworkError(f"cannot reach {endpoint}: {_first_line(exc)}") from None
    except ConnectionError as exc:  # offline mode, hf_xet's transfer errors
        raise NetworkError(f"upload to {endpoint} failed: {_first_line(exc)}") from None
    return PushResult(**summary, uploaded=tuple(todo), commit_oid=info.oid, dry_run=False)
