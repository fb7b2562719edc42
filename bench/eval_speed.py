"""Wall time of one lm-eval run through kvant's backend and through lm-eval's own `hf` backend, same tasks and limit.

    python bench/eval_speed.py --data-dir ../shared/data --tasks kvant_arc_easy,kvant_piqa,kvant_hellaswag --limit 100
    python bench/eval_speed.py --data-dir ../shared/data --tasks kvant_wikitext --limit 5
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _run(lm, tasks, limit, task_manager) -> tuple[float, dict]:
    from lm_eval.evaluator import simple_evaluate

    start = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=list(tasks), limit=limit, task_manager=task_manager, bootstrap_iters=0,
                          log_samples=False)
    return time.perf_counter() - start, out["results"]


def _scores(results: dict) -> dict:
    return {task: {k.split(",")[0]: v for k, v in m.items() if k.endswith(",none") and "stderr" not in k}
            for task, m in results.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--tasks", default="kvant_arc_easy,kvant_piqa")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="float32")
    p.add_argument("--hf-batch-size", type=int, default=16)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()

    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from kvant.engine import LLM
    from kvant.engine.registry import resolve_model
    from kvant.eval.data import prepare_tasks
    from kvant.eval.lm import KvantLM

    path = resolve_model(args.model)
    tasks = tuple(t.strip() for t in args.tasks.split(","))
    include = prepare_tasks(args.data_dir, Path(tempfile.gettempdir()) / "kvant-eval-bench",
                            tuple(t.removeprefix("kvant_") for t in tasks if t.startswith("kvant_")))
    tm = TaskManager(include_path=str(include))

    t0 = time.perf_counter()
    llm = LLM(str(path), dtype=args.dtype, device=args.device, max_model_len=args.max_model_len)
    kvant_load = time.perf_counter() - t0
    kvant_s, kvant_res = _run(KvantLM(pretrained=path, llm=llm), tasks, args.limit, tm)
    del llm

    t0 = time.perf_counter()
    # the same context length on both sides: rolling perplexity windows depend on it
    hf = HFLM(pretrained=str(path), dtype=args.dtype, device=args.device, batch_size=args.hf_batch_size,
              max_length=args.max_model_len)
    hf_load = time.perf_counter() - t0
    hf_s, hf_res = _run(hf, tasks, args.limit, tm)

    row = {"model": str(path), "tasks": list(tasks), "limit": args.limit, "device": args.device, "dtype": args.dtype,
           "threads": os.cpu_count(), "kvant_load_s": kvant_load, "kvant_eval_s": kvant_s, "hf_load_s": hf_load,
           "hf_eval_s": hf_s, "hf_over_kvant": hf_s / kvant_s, "kvant_scores": _scores(kvant_res),
           "hf_scores": _scores(hf_res)}
    print(f"| backend | load s | eval s |\n|---|---|---|\n| kvant | {kvant_load:.1f} | {kvant_s:.1f} |\n"
          f"| hf | {hf_load:.1f} | {hf_s:.1f} |\nhf / kvant eval time: {hf_s / kvant_s:.2f}")
    print(json.dumps(row, indent=2))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
