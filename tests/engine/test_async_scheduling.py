"""Async scheduling (a decode step launched before the host reads the last one's tokens) on the CPU, where the
launch runs eagerly: outputs equal the synchronous engine's token for token, and no placeholder, block or request
is left behind after stops, aborts and preemption."""
import pytest

from kvant.engine.llm import LLM
from kvant.engine.sampling_params import SamplingParams
from kvant.engine.sequence import PENDING_TOKEN

from .test_engine import GREEDY, assert_pool_empty, prompts


@pytest.fixture(scope="module")
def refs(tiny_model):
    from .conftest import reference_greedy

    ps = prompts(10)
    return ps, [reference_greedy(tiny_model, p, 12) for p in ps]


def _async_llm(tiny_model, **cfg):
    llm = LLM.from_model(tiny_model, None, async_scheduling=True, **cfg)
    runner = llm.engine.runner
    runner.launches = runner.chained = 0
    launch = runner.launch_decode

    def counted(seqs, prev):
        runner.launches += 1
        runner.chained += any(s.has_pending_token for s in seqs)  # input ids taken from the step before
        return launch(seqs, prev)

    runner.launch_decode = counted
    return llm


def _run(eng, requests):
    """Step until done; every streamed output is checked for placeholders. Returns the last output per request."""
    for rid, prompt, params in requests:
        eng.add_request(rid, prompt, params)
    last = {}
    while eng.has_unfinished_requests():
        for o in eng.step():
            for c in o.outputs:
                assert PENDING_TOKEN not in c.token_ids
            if o.request_id in last:  # cumulative outputs only grow
                assert o.outputs[0].token_ids[:len(last[o.request_id].outputs[0].token_ids)] == \
                    last[o.request_id].outputs[0].token_ids
            last[o.request_id] = o
    return last


def test_sync_by_default_on_cpu(tiny_model):
    assert LLM.from_model(tiny_model, None).engine.async_scheduling is False


@pytest.mark.parametrize("cfg", [
    dict(),
    dict(num_kv_blocks=16, max_model_len=64),  # preemption while a step is launched
    dict(max_num_batched_tokens=7),  # chunked prefills between decode runs
    dict(block_size=1, num_kv_blocks=80, max_model_len=60),
])
def test_greedy_matches_reference(tiny_model, refs, cfg):
    ps, expected = refs
    llm = _async_llm(tiny_model, **cfg)
    outs = llm.generate(ps, GREEDY)
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert all(o.outputs[0].finish_reason == "length" for o in outs)
    assert llm.engine.runner.chained > 0
    if cfg.get("num_kv_blocks") == 16:
        assert llm.stats().num_preemptions > 0
    assert llm.engine._launched is None
    assert_pool_empty(llm)


def test_stops_and_lengths_equal_the_synchronous_engine(tiny_model, refs):
    ps, expected = refs
    stop_tok = expected[1][4]
    reqs = [("stop", ps[1], SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[stop_tok])),
            ("short", ps[2], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)),
            ("min", ps[1], SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[stop_tok],
                                          min_tokens=expected[1].index(stop_tok) + 2)),
            ("long", ps[3], GREEDY)]
    sync = _run(LLM.from_model(tiny_model, None, max_model_len=len(ps[3]) + 7).engine, reqs)
    llm = _async_llm(tiny_model, max_model_len=len(ps[3]) + 7)
    got = _run(llm.engine, reqs)
    for rid in sync:
        a, b = sync[rid].outputs[0], got[rid].outputs[0]
        assert (a.token_ids, a.finish_reason, a.stop_reason) == (b.token_ids, b.finish_reason, b.stop_reason), rid
    assert got["stop"].outputs[0].token_ids[-1] == stop_tok and got["long"].outputs[0].finish_reason == "length"
    assert llm.engine.runner.launches > 0
    assert_pool_empty(llm)


def test_abort_while_a_step_is_launched(tiny_model, refs):
    ps, expected = refs
    llm = _async_llm(tiny_model)
    eng = llm.engine
    for i, p in enumerate(ps[:4]):
        eng.add_request(str(i), p, GREEDY)
    outs = {}
    while eng._launched is None:
        for o in eng.step():
            outs[o.request_id] = o
    aborted = eng.abort_request("1")
    assert aborted.outputs[0].finish_reason == "abort" and PENDING_TOKEN not in aborted.outputs[0].token_ids
    assert aborted.outputs[0].token_ids == expected[1][:len(aborted.outputs[0].token_ids)]
    while eng.has_unfinished_requests():
        for o in eng.step():
            outs[o.request_id] = o
    assert [outs[r].outputs[0].token_ids for r in "023"] == [expected[0], expected[2], expected[3]]
    assert "1" not in eng.requests
    assert_pool_empty(llm)


def test_seeded_samples_equal_the_synchronous_engine(tiny_model):
    p = prompts(1, seed=9, low=33, high=33)[0]
    params = [SamplingParams(n=3, temperature=1.0, seed=123, max_tokens=8, ignore_eos=True),
              SamplingParams(temperature=0.7, seed=5, max_tokens=10, ignore_eos=True)]
    others = prompts(2, seed=4)
    sync = LLM.from_model(tiny_model, None, block_size=4).generate([p, others[0]], params)
    llm = _async_llm(tiny_model, block_size=4)
    got = llm.generate([p, others[0]], params)
    assert [[c.token_ids for c in o.outputs] for o in got] == [[c.token_ids for c in o.outputs] for o in sync]
    assert llm.engine.runner.launches > 0
    # rows that need the full sampler (top-k, logprobs) are never launched ahead: same output, no launch
    llm2 = _async_llm(tiny_model)
    (o,) = llm2.generate([others[1]], SamplingParams(temperature=1.0, top_k=5, seed=1, max_tokens=6, logprobs=1))
    (ref,) = LLM.from_model(tiny_model, None).generate(
        [others[1]], SamplingParams(temperature=1.0, top_k=5, seed=1, max_tokens=6, logprobs=1))
    assert o.outputs[0].token_ids == ref.outputs[0].token_ids and llm2.engine.runner.launches == 0
    assert_pool_empty(llm)
    assert_pool_empty(llm2)
