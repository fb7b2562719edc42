"""lm-eval's own `local-completions` backend pointed at kvant serve scores a local multiple-choice task exactly as
lm-eval's `hf` backend does on the same model (fp32 on CPU): same accuracy, same per-choice loglikelihoods."""
import pytest

TASK = "kvant_arc_easy"
LIMIT = 6


@pytest.fixture(scope="module")
def task_manager(shared_data, tmp_path_factory):
    from lm_eval.tasks import TaskManager

    from kvant.eval.data import prepare_tasks

    return TaskManager(include_path=str(prepare_tasks(shared_data, tmp_path_factory.mktemp("eval-data"))))


def _run(model, task_manager, **kw):
    from lm_eval.evaluator import simple_evaluate

    return simple_evaluate(model=model, tasks=[TASK], task_manager=task_manager, limit=LIMIT, bootstrap_iters=0,
                           log_samples=True, **kw)


def _loglikelihoods(results):
    return [(s["doc_id"], [float(r[0]) for r in s["filtered_resps"]]) for s in results["samples"][TASK]]


@pytest.mark.slow
def test_local_completions_against_kvant_serve_matches_hf_backend(server, default_model, task_manager):
    from lm_eval.models.huggingface import HFLM

    from .conftest import MODEL_NAME

    hf = _run(HFLM(pretrained=str(default_model), dtype="float32", device="cpu", batch_size=8), task_manager)
    args = (f"model={MODEL_NAME},base_url={server.base_url}/v1/completions,tokenizer={default_model},"
            "tokenizer_backend=huggingface,tokenized_requests=True,num_concurrent=4,max_retries=1")
    served = _run("local-completions", task_manager, model_args=args)
    for metric in ("acc,none", "acc_norm,none"):
        assert served["results"][TASK][metric] == hf["results"][TASK][metric], metric
    ours, theirs = _loglikelihoods(served), _loglikelihoods(hf)
    assert [d for d, _ in ours] == [d for d, _ in theirs] and len(ours) == LIMIT
    for (_, a), (_, b) in zip(ours, theirs):
        assert a == pytest.approx(b, abs=2e-3)
