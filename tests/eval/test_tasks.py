import json
import re

import pytest

from kvant.eval.data import LOCAL_TASKS, wikitext_pages

LIMIT = 10


def _jsonl(path, n):
    with open(path, encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


def _expected_requests(task, shared_data):
    # (number of choices per doc, gold index per doc) for the first LIMIT docs, read from the raw source files
    root = shared_data
    if task in ("kvant_arc_easy", "kvant_arc_challenge"):
        name = "ARC-Easy-Test.jsonl" if task == "kvant_arc_easy" else "ARC-Challenge-Test.jsonl"
        rows = _jsonl(root / task.removeprefix("kvant_") / name, LIMIT)
        return [len(r["question"]["choices"]) for r in rows], \
            [[c["label"] for c in r["question"]["choices"]].index(r["answerKey"]) for r in rows]
    if task == "kvant_openbookqa":
        rows = _jsonl(root / "openbookqa" / "test.jsonl", LIMIT)
        return [len(r["question"]["choices"]) for r in rows], \
            [[c["label"] for c in r["question"]["choices"]].index(r["answerKey"]) for r in rows]
    if task == "kvant_piqa":
        labels = (root / "piqa" / "valid-labels.lst").read_text().split()[:LIMIT]
        return [2] * LIMIT, [int(x) for x in labels]
    if task == "kvant_winogrande":
        return [2] * LIMIT, [int(r["answer"]) - 1 for r in _jsonl(root / "winogrande" / "dev.jsonl", LIMIT)]
    if task == "kvant_boolq":
        return [2] * LIMIT, [int(r["answer"]) for r in _jsonl(root / "boolq" / "dev.jsonl", LIMIT)]
    if task == "kvant_sciq":
        return [4] * LIMIT, [3] * LIMIT
    if task == "kvant_hellaswag":
        lines = (root / "hellaswag" / "hellaswag_val_full.txt").read_text().splitlines()
        return [4] * LIMIT, [int(lines[6 * i + 1]) for i in range(LIMIT)]
    return None, None


@pytest.mark.parametrize("task", LOCAL_TASKS)
def test_task_builds_instances_from_local_data(task, task_manager, shared_data):
    from lm_eval.tasks import get_task_dict

    t = get_task_dict([task], task_manager)[task]
    t.build_all_requests(limit=LIMIT, rank=0, world_size=1)
    docs = {}
    for inst in t.instances:
        assert all(isinstance(a, str) for a in inst.args)
        docs.setdefault(inst.doc_id, []).append(inst)
    assert sorted(docs) == list(range(LIMIT))
    num_choices, golds = _expected_requests(task, shared_data)
    if t.OUTPUT_TYPE == "multiple_choice":
        assert [len(docs[i]) for i in range(LIMIT)] == num_choices
        # winogrande scores the choices as contexts, so lm-eval's doc_to_text gives its gold index
        gold_of = t.doc_to_text if task == "kvant_winogrande" else t.doc_to_target
        assert [gold_of(docs[i][0].doc) for i in range(LIMIT)] == golds
    elif task == "kvant_lambada_openai":
        rows = _jsonl(shared_data / "lambada_openai" / "lambada_test.jsonl", LIMIT)
        assert [docs[i][0].args for i in range(LIMIT)] == \
            [(r["text"].rsplit(" ", 1)[0], " " + r["text"].rsplit(" ", 1)[1]) for r in rows]
    else:
        assert task == "kvant_wikitext" and all(len(docs[i]) == 1 and len(docs[i][0].args) == 1 for i in docs)


def test_wikitext_pages_split_at_top_level_headings(shared_data):
    raw = (shared_data / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    pages = wikitext_pages(raw)
    titles = re.findall(r"^ = [^=].*[^=] = $", raw, flags=re.M)
    assert len(pages) == len(titles)
    assert [p.lstrip("\n").split("\n", 1)[0] for p in pages] == titles
    assert "\n".join(pages).strip() == raw.strip()


def test_data_dir_without_a_dataset_is_a_one_line_error(tmp_path):
    from kvant.artifact.errors import KvantError
    from kvant.eval.data import prepare_tasks

    with pytest.raises(KvantError, match="local data for piqa is missing"):
        prepare_tasks(tmp_path, tmp_path / "cache", ("piqa",))
