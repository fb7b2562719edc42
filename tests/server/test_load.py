"""Bounded load: 200 concurrent streams with random lengths, 20% of the clients hanging up early."""
import asyncio
import random

import pytest

MODEL_NAME = "smollm2-test"  # as served by conftest.py
NUM_REQUESTS = 200
DISCONNECT_SHARE = 0.2
WORDS = "alpha beta gamma delta river stone cloud paper light music garden window".split()


def _workload(seed: int):
    rng = random.Random(seed)
    jobs = []
    for i in range(NUM_REQUESTS):
        prompt = f"Request {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30)))
        max_tokens = rng.randint(1, 16)
        # a disconnecting client reads this many chunks first (it needs >= 2 tokens to leave mid-stream)
        hang_up_after = rng.randint(1, max_tokens - 1) if max_tokens > 1 and rng.random() < DISCONNECT_SHARE else None
        jobs.append((prompt, max_tokens, hang_up_after))
    return jobs


async def _one(client, prompt: str, max_tokens: int, hang_up_after: int | None) -> dict:
    stream = await client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=max_tokens, temperature=0.8,
                                             seed=7, logprobs=0, stream=True, stream_options={"include_usage": True},
                                             extra_body={"ignore_eos": True})
    ids, num_tokens, finish, usage, chunks = set(), 0, None, None, 0
    async for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            num_tokens += len(choice.logprobs.tokens)
            finish = choice.finish_reason or finish
        chunks += 1
        if hang_up_after is not None and chunks >= hang_up_after:
            await stream.close()
            return {"aborted": True, "ids": ids}
    return {"aborted": False, "ids": ids, "num_tokens": num_tokens, "finish": finish, "usage": usage}


async def _run_all(base_url: str, jobs):
    import httpx
    import openai

    limits = httpx.Limits(max_connections=NUM_REQUESTS + 10, max_keepalive_connections=NUM_REQUESTS + 10)
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300,
                                  http_client=httpx.AsyncClient(limits=limits, timeout=300)) as client:
        return await asyncio.gather(*(_one(client, *job) for job in jobs))


def test_200_concurrent_streams_with_disconnects(server, engine, idle_stats):
    jobs = _workload(seed=2026)
    num_hang_ups = sum(job[2] is not None for job in jobs)
    assert 20 <= num_hang_ups <= 60  # the seeded workload really exercises disconnects
    results = asyncio.run(_run_all(server.base_url, jobs))

    assert len(results) == NUM_REQUESTS
    all_ids = [next(iter(r["ids"])) for r in results]
    assert all(len(r["ids"]) == 1 for r in results)  # every chunk of a stream carries that stream's id
    assert len(set(all_ids)) == NUM_REQUESTS  # no stream saw another's chunks
    for (prompt, max_tokens, hang_up_after), r in zip(jobs, results):
        assert r["aborted"] == (hang_up_after is not None)
        if not r["aborted"]:
            assert r["num_tokens"] == max_tokens, prompt
            assert r["finish"] == "length"
            assert r["usage"].completion_tokens == max_tokens

    stats = idle_stats(engine)
    assert stats.num_free_blocks == stats.num_blocks
    assert (stats.num_running, stats.num_waiting) == (0, 0)


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_disconnect_frees_blocks_at_once(server, engine, idle_stats, endpoint):
    import httpx

    idle_stats(engine)
    if endpoint == "completions":
        path, body = "/v1/completions", {"prompt": "Count: one two three", "max_tokens": 500}
    else:
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": "Count"}], "max_tokens": 500}
    body.update(model=MODEL_NAME, stream=True, ignore_eos=True)
    with httpx.stream("POST", server.base_url + path, json=body, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(3):
            while not next(lines).startswith("data: "):
                pass
        assert engine.stats().num_free_blocks < engine.stats().num_blocks  # the request holds blocks now
    # the client is gone: the engine must abort long before the 500 tokens it asked for (~minutes on CPU)
    stats = idle_stats(engine, timeout_s=5.0)
    assert stats.num_free_blocks == stats.num_blocks
    assert stats.num_running == 0
