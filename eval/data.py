"""Local evaluation data: convert the files of a data folder (layout of /work/shared/data, see its SOURCES.md) to the
HF schemas lm-eval's official tasks read, and render kvant's task YAMLs with absolute `data_files`."""
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator

from kvant.artifact.errors import DataMissing, KvantError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
UTILS_MODULE = "kvant_task_utils.py"
LOCAL_PREFIX = "kvant_"
_PLACEHOLDER = re.compile(r"\{data:([a-z_]+)\}")


def _read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---- converters: source folder -> rows in the schema of the official HF dataset


def _arc(path: Path) -> Iterator[dict]:
    for row in _read_jsonl(path):
        q = row["question"]
        yield {"id": row["id"], "question": q["stem"], "answerKey": row["answerKey"],
               "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}}


def arc_easy(root: Path) -> Iterator[dict]:
    return _arc(root / "arc_easy" / "ARC-Easy-Test.jsonl")


def arc_challenge(root: Path) -> Iterator[dict]:
    return _arc(root / "arc_challenge" / "ARC-Challenge-Test.jsonl")


def openbookqa(root: Path) -> Iterator[dict]:
    for row in _read_jsonl(root / "openbookqa" / "test.jsonl"):
        q = row["question"]
        yield {"id": row["id"], "question_stem": q["stem"], "answerKey": row["answerKey"],
               "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}}


def piqa(root: Path) -> Iterator[dict]:
    rows = list(_read_jsonl(root / "piqa" / "valid.jsonl"))
    labels = [int(x) for x in _read_lines(root / "piqa" / "valid-labels.lst") if x.strip()]
    if len(rows) != len(labels):
        raise KvantError(f"piqa: {len(rows)} items but {len(labels)} labels in {root / 'piqa'}")
    for row, label in zip(rows, labels):
        yield {"goal": row["goal"], "sol1": row["sol1"], "sol2": row["sol2"], "label": label}


def winogrande(root: Path) -> Iterator[dict]:
    for row in _read_jsonl(root / "winogrande" / "dev.jsonl"):
        yield {k: row[k] for k in ("sentence", "option1", "option2", "answer")}


def lambada_openai(root: Path) -> Iterator[dict]:
    for row in _read_jsonl(root / "lambada_openai" / "lambada_test.jsonl"):
        yield {"text": row["text"]}


def boolq(root: Path) -> Iterator[dict]:
    for row in _read_jsonl(root / "boolq" / "dev.jsonl"):
        yield {"question": row["question"], "passage": row["passage"], "label": int(bool(row["answer"]))}


def sciq(root: Path) -> Iterator[dict]:
    rows = json.loads((root / "sciq" / "test.json").read_text(encoding="utf-8"))
    for row in rows:
        yield {k: row[k] for k in ("question", "distractor1", "distractor2", "distractor3", "correct_answer", "support")}


def hellaswag(root: Path) -> Iterator[dict]:
    # six lines per item: "activity_label: ctx", gold label, four endings (already cleaned like lm-eval's preprocess)
    lines = _read_lines(root / "hellaswag" / "hellaswag_val_full.txt")
    if len(lines) % 6:
        raise KvantError(f"hellaswag: {len(lines)} lines is not a multiple of 6")
    for i in range(0, len(lines), 6):
        yield {"query": lines[i], "label": int(lines[i + 1]), "choices": lines[i + 2:i + 6]}


def _is_page_title(line: str) -> bool:
    s = line.replace("= = =", "===").replace("= =", "==").strip()
    return s.startswith("= ") and s.endswith(" =")


def wikitext_pages(raw_text: str) -> list[str]:
    # EleutherAI/wikitext_document_level: a page starts at each top-level heading " = Title = "; lines joined by "\n"
    pages, page = [], []
    for line in raw_text.split("\n"):
        if _is_page_title(line) and page:
            pages.append("\n".join(page))
            page = []
        page.append(line)
    if page:
        pages.append("\n".join(page))
    return [p for p in pages if p.strip()]


def wikitext(root: Path) -> Iterator[dict]:
    raw = (root / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    for page in wikitext_pages(raw):
        yield {"page": page}


CONVERTERS: dict[str, Callable[[Path], Iterator[dict]]] = {
    "arc_easy": arc_easy, "arc_challenge": arc_challenge, "piqa": piqa, "winogrande": winogrande,
    "lambada_openai": lambada_openai, "boolq": boolq, "sciq": sciq, "openbookqa": openbookqa,
    "hellaswag": hellaswag, "wikitext": wikitext,
}
LOCAL_TASKS = tuple(LOCAL_PREFIX + name for name in CONVERTERS)


def _fingerprint(data_dir: Path) -> str:
    h = hashlib.sha256(str(data_dir.resolve()).encode())
    for f in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(data_dir)}:{st.st_size}:{st.st_mtime_ns}".encode())
    for f in sorted(TASKS_DIR.glob("*")):
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _write_jsonl(rows: Iterator[dict], path: Path) -> int:
    tmp = path.with_suffix(".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def prepare_tasks(data_dir: Path, cache_dir: Path, names: tuple[str, ...] = tuple(CONVERTERS)) -> Path:
    """Convert the named datasets of data_dir and render their task YAMLs; returns the folder for include_path."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        # a path the user typed that is not there is bad input (exit 2); DataMissing (exit 3) is for data a task
        # needs that no folder provides
        raise KvantError(f"evaluation data folder {data_dir} does not exist")
    unknown = [n for n in names if n not in CONVERTERS]
    if unknown:
        raise KvantError(f"no local data converter for {', '.join(unknown)}; known: {', '.join(CONVERTERS)}")
    out = Path(cache_dir) / _fingerprint(data_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "tasks").mkdir(exist_ok=True)
    shutil.copyfile(TASKS_DIR / UTILS_MODULE, out / "tasks" / UTILS_MODULE)
    for name in names:
        target = out / "data" / f"{name}.jsonl"
        if not target.exists():
            try:
                _write_jsonl(CONVERTERS[name](data_dir), target)
            except FileNotFoundError as exc:
                raise DataMissing(f"local data for {name} is missing: {exc.filename}") from exc
        text = (TASKS_DIR / f"{LOCAL_PREFIX}{name}.yaml").read_text(encoding="utf-8")
        text = _PLACEHOLDER.sub(lambda m: str(out / "data" / f"{m.group(1)}.jsonl"), text)
        (out / "tasks" / f"{LOCAL_PREFIX}{name}.yaml").write_text(text, encoding="utf-8")
    return out / "tasks"
