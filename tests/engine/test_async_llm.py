import asyncio

import pytest

from kvant.engine.async_llm import AsyncLLM
from kvant.artifact.errors import KvantError
from kvant.engine.sampling_params import SamplingParams

from .conftest import reference_greedy

GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [40] * 20, [3, 90, 4]]


async def collect(engine, prompt, params, rid):
    outs = [out async for out in engine.generate(prompt, params, rid)]
    return outs


def count_launches(engine) -> list:
    """Every decode step launched ahead of its tokens appends to the returned list (before any request arrives)."""
    runner, launches = engine.engine.runner, []
    launch = runner.launch_decode
    runner.launch_decode = lambda seqs, prev: launches.append(len(seqs)) or launch(seqs, prev)
    return launches


def pool_empty(engine) -> bool:
    s = engine.stats()
    return s.num_free_blocks == s.num_blocks and s.num_running == 0 and s.num_waiting == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("async_scheduling", [None, True])  # True: decode steps launched ahead of their tokens
async def test_concurrent_streams_are_cumulative_and_correct(tiny_model, async_scheduling):
    engine = AsyncLLM.from_model(tiny_model, None, max_num_batched_tokens=8, async_scheduling=async_scheduling)
    launches = count_launches(engine)
    try:
        results = await asyncio.gather(*(collect(engine, p, GREEDY, f"r{i}") for i, p in enumerate(PROMPTS)))
        for prompt, outs in zip(PROMPTS, results):
            final = outs[-1]
            assert final.finished and not any(o.finished for o in outs[:-1])
            assert final.outputs[0].token_ids == reference_greedy(tiny_model, prompt, 10)
            lengths = [len(o.outputs[0].token_ids) for o in outs]
            assert lengths == sorted(lengths) and lengths[-1] == 10
            assert all(o.outputs[0].token_ids == final.outputs[0].token_ids[:len(o.outputs[0].token_ids)]
                       for o in outs)
        assert pool_empty(engine) and engine.stats().generation_tokens_total == 40
        assert bool(launches) == bool(async_scheduling)
    finally:
        await engine.shutdown()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("async_scheduling", [None, True])
async def test_abort_mid_stream_frees_blocks(tiny_model, async_scheduling):
    engine = AsyncLLM.from_model(tiny_model, None, async_scheduling=async_scheduling)
    launches = count_launches(engine)
    try:
        long = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
        outs = []
        async for out in engine.generate(PROMPTS[1], long, "long"):
            outs.append(out)
            if len(outs) == 3:
                await engine.abort("long")
        assert outs[-1].finished and outs[-1].outputs[0].finish_reason == "abort"
        assert len(outs[-1].outputs[0].token_ids) < 200
        other = await collect(engine, PROMPTS[0], GREEDY, "after")
        assert other[-1].outputs[0].token_ids == reference_greedy(tiny_model, PROMPTS[0], 10)
        assert pool_empty(engine) and bool(launches) == bool(async_scheduling)
    finally:
        await engine.shutdown()


@pytest.mark.timeout(120)
async def test_consumer_leaving_early_aborts_the_request(tiny_model):
    engine = AsyncLLM.from_model(tiny_model, None)
    try:
        gen = engine.generate(PROMPTS[2], SamplingParams(temperature=0, max_tokens=200, ignore_eos=True), "gone")
        await anext(gen)
        await gen.aclose()
        for _ in range(100):
            if pool_empty(engine):
                break
            await asyncio.sleep(0.05)
        assert pool_empty(engine)
    finally:
        await engine.shutdown()


@pytest.mark.timeout(120)
async def test_bad_requests_raise_value_error_and_engine_keeps_serving(tiny_model):
    engine = AsyncLLM.from_model(tiny_model, None, max_model_len=64)
    try:
        with pytest.raises(ValueError, match="max_model_len"):
            await collect(engine, [5] * 65, GREEDY, "too-long")
        with pytest.raises(ValueError, match="prompt"):
            await collect(engine, [], GREEDY, "empty")
        first = asyncio.create_task(collect(engine, PROMPTS[0], SamplingParams(max_tokens=50, ignore_eos=True), "dup"))
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="request_id"):
            await collect(engine, PROMPTS[1], GREEDY, "dup")
        assert (await first)[-1].finished
        ok = await collect(engine, PROMPTS[3], GREEDY, "ok")
        assert ok[-1].outputs[0].token_ids == reference_greedy(tiny_model, PROMPTS[3], 10)
        assert engine.max_model_len == 64 and engine.tokenizer is None
    finally:
        await engine.shutdown()
    with pytest.raises(KvantError, match="shut down"):
        await collect(engine, PROMPTS[0], GREEDY, "late")
