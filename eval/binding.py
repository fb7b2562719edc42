"""After an evaluation: the results are bound to the weights they were computed on, and the manifest learns the
sha256 of the files eval wrote, and of nothing else (eval never re-blesses a file it did not write)."""
import json
from pathlib import Path

from kvant.artifact.manifest import EVAL_DIR, MANIFEST, RESULTS, evaluated_files, sha256_file


def bind_results(artifact: Path) -> None:
    """Adds `evaluated_files` (the verified manifest hashes the scores belong to) to eval/results.json, then records
    the hashes of eval/'s files in kvant.json. Call only after the artifact was verified."""
    artifact = Path(artifact)
    manifest_path = artifact / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    results_path = artifact / RESULTS
    results = json.loads(results_path.read_text(encoding="utf-8"))
    results["evaluated_files"] = evaluated_files(manifest)
    tmp = results_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    tmp.replace(results_path)
    files = {rel: d for rel, d in manifest.get("files", {}).items() if not rel.startswith(EVAL_DIR + "/")}
    for path in sorted((artifact / EVAL_DIR).rglob("*")):
        if path.is_file() and not path.name.endswith(".tmp"):
            files[path.relative_to(artifact).as_posix()] = sha256_file(path)
    manifest["files"] = dict(sorted(files.items()))
    tmp = artifact / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(manifest_path)
