"""kvant's lm-eval backend against lm-eval's own `hf` backend on the default model, fp32 on CPU."""
import pytest

MC_TASKS = ("kvant_arc_easy", "kvant_piqa")
MC_LIMIT = 6
HF_MAX_LENGTH = 256  # short rolling windows: exercises multi-window perplexity and keeps CPU time small
NUM_PAGES = 2


def _evaluate(lm, task_manager, tasks, **kw):
    from lm_eval.evaluator import simple_evaluate

    return simple_evaluate(model=lm, tasks=list(tasks), task_manager=task_manager, bootstrap_iters=0,
                           log_samples=True, **kw)


def _short_pages(shared_data):
    from kvant.eval.data import wikitext_pages

    pages = wikitext_pages((shared_data / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8"))
    by_words = sorted((len(p.split()), i) for i, p in enumerate(pages) if len(p.split()) >= 200)
    return sorted(i for _, i in by_words[:NUM_PAGES])


@pytest.fixture(scope="module")
def hf_results(default_model, task_manager, shared_data):
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=str(default_model), dtype="float32", device="cpu", batch_size=8, max_length=HF_MAX_LENGTH)
    mc = _evaluate(hf, task_manager, MC_TASKS, limit=MC_LIMIT)
    ppl = _evaluate(hf, task_manager, ["kvant_wikitext"], samples={"kvant_wikitext": _short_pages(shared_data)})
    return mc, ppl


@pytest.fixture(scope="module")
def engine(default_model):
    from kvant.engine import LLM

    # a small KV pool: enough for the longest prompt, quick to allocate on CPU
    return LLM(str(default_model), dtype="float32", device="cpu", max_model_len=HF_MAX_LENGTH + 2, num_kv_blocks=256)


def _loglikelihoods(results, task):
    return [(s["doc_id"], [float(r[0]) for r in s["filtered_resps"]]) for s in results["samples"][task]]


@pytest.mark.slow
def test_same_scores_as_hf_backend(engine, hf_results, default_model, task_manager, shared_data):
    from kvant.eval.lm import KvantLM

    hf_mc, hf_ppl = hf_results
    # a window's prompt is its context token + max_seq_len tokens, then the engine samples one: + 2 matches HF's
    lm = KvantLM(pretrained=default_model, llm=engine, max_length=HF_MAX_LENGTH + 2)
    mc = _evaluate(lm, task_manager, MC_TASKS, limit=MC_LIMIT)
    for task in MC_TASKS:
        for metric in ("acc,none", "acc_norm,none"):
            assert mc["results"][task][metric] == hf_mc["results"][task][metric], (task, metric)
        ours, theirs = _loglikelihoods(mc, task), _loglikelihoods(hf_mc, task)
        assert [d for d, _ in ours] == [d for d, _ in theirs]
        for (_, a), (_, b) in zip(ours, theirs):
            assert a == pytest.approx(b, abs=2e-3)

    ppl = _evaluate(lm, task_manager, ["kvant_wikitext"], samples={"kvant_wikitext": _short_pages(shared_data)})
    ours = ppl["results"]["kvant_wikitext"]["word_perplexity,none"]
    theirs = hf_ppl["results"]["kvant_wikitext"]["word_perplexity,none"]
    assert abs(ours / theirs - 1) < 0.005
