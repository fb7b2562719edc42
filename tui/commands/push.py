"""`kvant push ARTIFACT REPO_ID`: verify, regenerate the model card, upload what the Hub lacks."""
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("push", help="upload an artifact to the Hugging Face Hub",
                       description="Verify an artifact against its manifest, regenerate its model card (README.md) "
                                   "from the manifest and eval results, and upload the files the Hub repo lacks. "
                                   "The token comes from HF_TOKEN or `hf auth login`.")
    p.add_argument("artifact", type=Path, help="artifact folder written by `kvant quantize`")
    p.add_argument("repo_id", help="target repo, 'namespace/name' (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", default=None, metavar="BRANCH", help="push to this branch (created if missing)")
    p.add_argument("--commit-message", default=None, help="commit summary (default: names the scheme and base)")
    p.add_argument("--dry-run", action="store_true", help="print the card and the file list; upload nothing")
    p.add_argument("--force", action="store_true", help="push even though the eval gate failed")
    p.set_defaults(func=run)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def run(args) -> int:
    import sys

    from tqdm import tqdm

    from kvant.quantize.hub import push

    bar, stages = None, set()

    def progress(stage: str, done: int, total: int, message: str) -> None:
        nonlocal bar
        if stage == "verify":  # per-file sha256 check; the upload itself shows huggingface_hub's byte bars
            if bar is None:
                bar = tqdm(total=100, desc="verify sha256", bar_format="{desc}: {percentage:3.0f}%", file=sys.stderr)
            bar.n = int(100 * done / total) if total else 0
            bar.refresh()
        elif stage not in stages:
            stages.add(stage)
            if bar is not None:
                bar.close()
                bar = None
            print(f"{message}...", file=sys.stderr)

    try:
        result = push(args.artifact, args.repo_id, private=args.private, revision=args.revision,
                      commit_message=args.commit_message, dry_run=args.dry_run, force=args.force,
                      progress=None if args.dry_run else progress)
    finally:
        if bar is not None:
            bar.close()
    if not result.evaluated:
        print(f"note: {args.artifact} has no eval results; the card says 'not evaluated' (run `kvant eval` first)")
    elif not result.gate_passed:
        print("warning: pushing an artifact that failed its eval gate (--force)")
    if result.dry_run:
        print(result.card)
        print(f"files for {result.repo_id}@{result.revision} ({result.endpoint}):")
        width = max(len(p) for p, _ in result.files)
        for path, size in result.files:
            print(f"  {path:<{width}}  {_size(size):>10}")
        print(f"total {_size(sum(s for _, s in result.files))}; dry run: nothing uploaded")
        return 0
    url = f"{result.endpoint}/{result.repo_id}"
    if result.extra_remote:
        print(f"warning: {url} also holds {len(result.extra_remote)} file(s) not in this artifact, left in place: "
              + ", ".join(result.extra_remote))
    if result.commit_oid is None:
        print(f"{url} already up to date at {result.revision}: nothing uploaded")
    else:
        print(f"uploaded {len(result.uploaded)} file(s) to {url} ({result.revision}), commit {result.commit_oid[:12]}")
    return 0
