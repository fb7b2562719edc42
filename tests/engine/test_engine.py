import random

import pytest
import torch

from kvant.engine.llm import LLM
from kvant.engine.sampling_params import SamplingParams

from .conftest import TINY, reference_greedy


def prompts(n, seed=0, low=1, high=40):
    rng = random.Random(seed)
    return [[rng.randrange(2, TINY.vocab_size) for _ in range(rng.randint(low, high))] for _ in range(n)]


def assert_pool_empty(llm):
    bm = llm.engine.block_manager
    assert bm.num_free_blocks == bm.num_blocks
    assert all(b.ref_count == 0 for b in bm.blocks)
    assert llm.engine.requests == {} and llm.engine.scheduler.is_finished()


@pytest.fixture(scope="module")
def refs(tiny_model):
    ps = prompts(10)
    return ps, [reference_greedy(tiny_model, p, 12) for p in ps]


GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


@pytest.mark.parametrize("cfg", [
    dict(),
    dict(num_kv_blocks=16, max_model_len=64),  # 64 tokens for 10 sequences of up to 52: preemption
    dict(max_num_batched_tokens=7),  # prompts prefilled in chunks of up to 7 tokens, mixed with decodes
    dict(enable_prefix_caching=False, max_num_seqs=3),
    dict(block_size=1, num_kv_blocks=80, max_model_len=60),
])
def test_greedy_matches_reference_forward(tiny_model, refs, cfg):
    ps, expected = refs
    llm = LLM.from_model(tiny_model, None, **cfg)
    outs = llm.generate(ps, GREEDY)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert all(o.finished and o.outputs[0].finish_reason == "length" for o in outs)
    if "num_kv_blocks" in cfg and cfg["num_kv_blocks"] == 16:
        assert llm.stats().num_preemptions > 0
    assert_pool_empty(llm)


def test_shared_prefix_is_served_from_cache(tiny_model):
    base = prompts(1, seed=5, low=37, high=37)[0]
    ps = [base + [3 + i, 4 + i] for i in range(4)]
    llm = LLM.from_model(tiny_model, None, block_size=4)
    first = llm.generate(ps[:1], GREEDY)[0]
    rest = llm.generate(ps[1:], GREEDY)
    assert first.num_cached_tokens == 0
    assert [o.num_cached_tokens for o in rest] == [36] * 3  # 9 full blocks of the 37 shared tokens
    assert llm.stats().prefix_cache_hit_rate > 0
    assert [o.outputs[0].token_ids for o in [first] + rest] == [reference_greedy(tiny_model, p, 12) for p in ps]
    assert_pool_empty(llm)


def test_abort_frees_blocks_and_others_continue(tiny_model, refs):
    ps, expected = refs
    llm = LLM.from_model(tiny_model, None, max_num_batched_tokens=16)
    eng = llm.engine
    for i, p in enumerate(ps[:4]):
        eng.add_request(str(i), p, GREEDY)
    outs = {}
    for _ in range(3):
        for o in eng.step():
            outs[o.request_id] = o
    aborted = eng.abort_request("1")
    waiting = eng.abort_request("3")
    assert aborted.finished and aborted.outputs[0].finish_reason == "abort"
    assert waiting.outputs[0].finish_reason == "abort"
    assert eng.abort_request("1") is None
    while eng.has_unfinished_requests():
        for o in eng.step():
            outs[o.request_id] = o
    assert outs["0"].outputs[0].token_ids == expected[0] and outs["2"].outputs[0].token_ids == expected[2]
    assert_pool_empty(llm)


@pytest.mark.parametrize("kwargs, field", [
    (dict(temperature=-1), "temperature"), (dict(top_p=1.5), "top_p"), (dict(top_p=0), "top_p"),
    (dict(max_tokens=0), "max_tokens"), (dict(n=0), "n"), (dict(stop=3), "stop"), (dict(top_k=-2), "top_k"),
    (dict(min_p=2), "min_p"), (dict(logprobs=-1), "logprobs"), (dict(min_tokens=5, max_tokens=2), "min_tokens"),
    (dict(presence_penalty=3), "presence_penalty"), (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(stop_token_ids=["a"]), "stop_token_ids"), (dict(seed="x"), "seed"),
])
def test_sampling_params_name_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_bad_requests_raise_and_engine_keeps_serving(tiny_model, refs):
    ps, expected = refs
    llm = LLM.from_model(tiny_model, None, max_model_len=32)
    eng = llm.engine
    eng.add_request("ok", ps[0], GREEDY)
    for prompt, match in (([], "prompt"), ([5] * 33, "max_model_len"), ([TINY.vocab_size], "prompt"),
                          ("text", "prompt")):
        with pytest.raises(ValueError, match=match):
            eng.add_request("bad", prompt, GREEDY)
    with pytest.raises(ValueError, match="request_id"):
        eng.add_request("ok", ps[1], GREEDY)
    with pytest.raises(ValueError, match="stop"):
        eng.add_request("bad", ps[1], SamplingParams(stop="x"))
    (out,) = llm.generate([ps[1]], GREEDY)
    assert out.outputs[0].token_ids == expected[1]
    while eng.has_unfinished_requests():
        eng.step()
    assert_pool_empty(llm)


def test_length_stop_token_and_min_tokens(tiny_model, refs):
    ps, expected = refs
    llm = LLM.from_model(tiny_model, None, max_model_len=len(ps[0]) + 5)
    (cut,) = llm.generate([ps[0]], GREEDY)
    assert cut.outputs[0].token_ids == expected[0][:5] and cut.outputs[0].finish_reason == "length"
    stop_tok = expected[1][4]
    first = expected[1].index(stop_tok)
    (o,) = llm.generate([ps[1]], SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[stop_tok]))
    assert o.outputs[0].token_ids == expected[1][:first + 1]
    assert (o.outputs[0].finish_reason, o.outputs[0].stop_reason) == ("stop", stop_tok)
    # with min_tokens the stop token is masked until then, so the output differs from plain greedy
    (m,) = llm.generate([ps[1]], SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[stop_tok],
                                               min_tokens=first + 2))
    assert len(m.outputs[0].token_ids) >= first + 2 and stop_tok not in m.outputs[0].token_ids[:first + 2]
    assert_pool_empty(llm)


def test_logprobs_and_prompt_logprobs_match_reference(tiny_model, refs):
    ps, expected = refs
    p = ps[2]
    for budget in (8192, 5):  # whole prompt in one step, or chunked
        llm = LLM.from_model(tiny_model, None, max_num_batched_tokens=budget)
        (o,) = llm.generate([p], SamplingParams(temperature=0, max_tokens=4, logprobs=3, prompt_logprobs=2,
                                               ignore_eos=True))
        full = p + o.outputs[0].token_ids
        with torch.inference_mode():
            lp = tiny_model.compute_logits(tiny_model(torch.tensor(full), torch.arange(len(full)))).log_softmax(-1)
        assert o.prompt_logprobs[0] is None and len(o.prompt_logprobs) == len(p)
        for j in range(1, len(p)):
            d = o.prompt_logprobs[j]
            top = lp[j - 1].topk(2).indices.tolist()
            assert set(d) == {p[j], *top}
            for t, v in d.items():
                assert v == pytest.approx(lp[j - 1, t].item(), abs=1e-4)
        cum = 0.0
        for k, (t, d) in enumerate(zip(o.outputs[0].token_ids, o.outputs[0].logprobs)):
            row = lp[len(p) - 1 + k]
            assert set(d) == {t, *row.topk(3).indices.tolist()}
            assert d[t] == pytest.approx(row[t].item(), abs=1e-4)
            cum += row[t].item()
        assert o.outputs[0].cumulative_logprob == pytest.approx(cum, abs=1e-3)
        assert_pool_empty(llm)


def test_prompt_logprobs_from_skips_rows_and_reuses_the_shared_context(tiny_model):
    # lm-eval's pattern: one context, several continuations scored from the context's end
    ctx = prompts(1, seed=11, low=21, high=21)[0]
    conts = prompts(3, seed=12, low=2, high=6)
    llm = LLM.from_model(tiny_model, None, block_size=4)
    full = [o.prompt_logprobs for o in llm.generate([ctx + c for c in conts],
                                                    SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1))]
    first = llm.generate([ctx + conts[0]], SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1,
                                                         prompt_logprobs_from=len(ctx)))[0]
    rest = llm.generate([ctx + c for c in conts[1:]], SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1,
                                                                    prompt_logprobs_from=len(ctx)))
    for o, expected in zip([first, *rest], full):
        assert o.prompt_logprobs[:len(ctx)] == [None] * len(ctx)
        for got, want in zip(o.prompt_logprobs[len(ctx):], expected[len(ctx):], strict=True):
            assert set(got) == set(want)
            for t in got:
                assert got[t] == pytest.approx(want[t], abs=1e-5)
    # the context's full blocks before row len(ctx) - 1 come from the cache: 20 of its 21 tokens
    assert [o.num_cached_tokens for o in rest] == [20, 20]
    assert_pool_empty(llm)


def test_n_samples_share_prompt_blocks_and_seed_is_batch_independent(tiny_model):
    p = prompts(1, seed=9, low=33, high=33)[0]
    params = SamplingParams(n=3, temperature=1.0, seed=123, max_tokens=8, ignore_eos=True)
    llm = LLM.from_model(tiny_model, None, block_size=4)
    (alone,) = llm.generate([p], params)
    assert [c.index for c in alone.outputs] == [0, 1, 2]
    assert llm.engine.block_manager.num_prefix_hit_tokens == 2 * 32  # the 2 later samples reuse 8 full blocks
    assert len({tuple(c.token_ids) for c in alone.outputs}) > 1
    llm2 = LLM.from_model(tiny_model, None, block_size=4)
    others = prompts(5, seed=1)
    outs = llm2.generate(others[:2] + [p] + others[2:],
                         [SamplingParams(temperature=0.8, max_tokens=8)] * 2 + [params] + [GREEDY] * 3)
    assert [c.token_ids for c in outs[2].outputs] == [c.token_ids for c in alone.outputs]
    assert_pool_empty(llm)
    assert_pool_empty(llm2)


def test_fp8_kv_cache_stays_close_to_full_precision(tiny_model, refs):
    ps, _ = refs
    params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=0)
    full = LLM.from_model(tiny_model, None, max_num_batched_tokens=8).generate(ps[:4], params)
    llm = LLM.from_model(tiny_model, None, max_num_batched_tokens=8, kv_cache_dtype="fp8")
    assert llm.engine.runner.kv_cache.dtype == torch.float8_e4m3fn
    fp8 = llm.generate(ps[:4], params)
    diffs = [abs(a[t] - b[t]) for fa, fb in zip(full, fp8)
             for a, b in zip(fa.prompt_logprobs[1:], fb.prompt_logprobs[1:]) for t in a]
    assert 0 < max(diffs) < 0.5  # e4m3 keeps 3 mantissa bits: small, nonzero differences
    assert_pool_empty(llm)
    # the scales are restored to "none" for a full-precision cache built on the same model afterwards
    assert LLM.from_model(tiny_model, None).engine.runner.model.attention_layers()[0].k_scale is None
