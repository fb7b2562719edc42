"""The offline check's held-out text (none of it read by calibration) and its word perplexity (as transformers
computes it)."""
import pytest

from kvant.eval import offline


def _token_ngrams(ids: list[int], n: int) -> set[tuple[int, ...]]:
    return {tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)}


@pytest.mark.parametrize("num_samples, seq_len", [(8, 128), (32, 512)])
def test_heldout_paragraphs_share_no_text_with_calibration(default_model, num_samples, seq_len):
    from transformers import AutoTokenizer

    from kvant.quantize.calibration_data import load_calibration
    from kvant.quantize.recipe import load_recipe

    tok = AutoTokenizer.from_pretrained(default_model)
    recipe = load_recipe("w4a16-gptq-g64").with_calibration(num_samples=num_samples, seq_len=seq_len)
    calib = load_calibration(recipe.calibration, tok)
    manifest = {"recipe": recipe.to_dict(), "calibration": {"sha256": calib.sha256}}
    texts = offline.heldout_texts(tok, manifest)
    assert len(texts) == offline.NUM_HELDOUT == len(set(texts))
    # independent of how heldout_texts decides: no 8-token run of a held-out paragraph is in any calibration sample
    seen = set().union(*(_token_ngrams(s.tolist(), 8) for s in calib.input_ids))
    for t in texts:
        assert not _token_ngrams(tok.encode(t, add_special_tokens=False), 8) & seen
    # and the check is not vacuous: the paragraph at the start of each calibration sample is never held out
    builtin = offline.read_builtin()
    firsts = {p for p in builtin for s in calib.input_ids
              if tok.decode(s.tolist(), skip_special_tokens=True).startswith(p[:80])}
    assert firsts and not firsts & set(texts)


def test_heldout_needs_the_artifacts_own_calibration(default_model):
    from transformers import AutoTokenizer

    from kvant.artifact.errors import KvantError
    from kvant.quantize.recipe import load_recipe

    tok = AutoTokenizer.from_pretrained(default_model)
    recipe = load_recipe("w4a16-gptq-g64").with_calibration(num_samples=4, seq_len=64)
    with pytest.raises(KvantError, match="sha256"):
        offline.heldout_texts(tok, {"recipe": recipe.to_dict(), "calibration": {"sha256": "0" * 64}})


@pytest.mark.slow
def test_word_perplexity_matches_transformers(default_model):
    import math

    import torch
    from transformers import AutoModelForCausalLM

    from kvant.engine import LLM

    texts = offline.read_builtin()[:2]
    llm = LLM(str(default_model), dtype="float32", device="cpu", max_model_len=1024)
    ours = offline.word_perplexity(llm, texts)
    hf = AutoModelForCausalLM.from_pretrained(default_model, dtype=torch.float32).eval()
    tok = llm.tokenizer
    total = 0.0
    for t in texts:
        ids = torch.tensor([[tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
                            + tok.encode(t, add_special_tokens=False)])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0, :-1].float(), dim=-1)
        total += float(logp.gather(1, ids[0, 1:, None]).sum())
    expected = math.exp(-total / sum(len(t.split()) for t in texts))
    assert ours == pytest.approx(expected, rel=1e-3)


def test_the_base_side_is_computed_once_per_base_and_inputs(tiny, tmp_path, monkeypatch):
    # an auto search validates several points against one base: the base's perplexity, greedy answers and their
    # log-probabilities are computed for the first and reused for the next, with the same report as a fresh run;
    # a base file that changes makes them computed again
    import dataclasses
    import os

    from kvant.eval import generative as gen
    from kvant.quantize.api import quantize
    from kvant.quantize.recipe import load_recipe

    monkeypatch.setenv("KVANT_HOME", str(tmp_path / "home"))
    recipe = dataclasses.replace(load_recipe("w4a16-gptq-g64").with_calibration(num_samples=2, seq_len=32),
                                 algorithm="rtn", observer="minmax")
    art = tmp_path / "art"
    quantize(str(tiny), recipe, art, device="cpu")
    calls = []
    real = gen.base_answers
    monkeypatch.setattr(gen, "base_answers", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = gen.GenerativeConfig(max_tokens=4)

    def run():
        r = offline.evaluate_offline(art, tiny, generative=cfg, num_heldout=4)
        return r.perplexity.base, r.perplexity.quant, r.generative

    offline._BASE_SIDE.clear()
    first = run()
    assert run() == first and len(calls) == 1
    offline._BASE_SIDE.clear()
    assert run() == first and len(calls) == 2  # the kept figures are what a fresh run computes
    config = tiny / "config.json"
    st = config.stat()
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert run() == first and len(calls) == 3
