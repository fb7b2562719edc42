"""The real server on the default model (fp32, CPU), driven by the official openai client; references from
transformers' own forward pass."""
import httpx
import pytest
import torch

MODEL_NAME = "smollm2-test"  # as served by conftest.py

PROMPT = "The capital of France is"
LONG_PROMPT = ("The quick brown fox jumps over the lazy dog. " * 6).strip()  # > 2 blocks of 16 tokens


def _hf_greedy(hf_model, tokenizer, prompt: str, num_tokens: int) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = hf_model.generate(ids, max_new_tokens=num_tokens, do_sample=False, min_new_tokens=num_tokens)
    return out[0, ids.shape[1]:].tolist()


def _hf_token_logprobs(hf_model, ids: list[int]) -> list[float]:
    with torch.no_grad():
        logits = hf_model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]


def test_models_and_health(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert httpx.get(f"{server.base_url}/health").status_code == 200


def test_greedy_completion_matches_transformers(client, hf_model, tokenizer):
    expected = _hf_greedy(hf_model, tokenizer, PROMPT, 8)
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=8, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text == tokenizer.decode(expected)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(tokenizer(PROMPT).input_ids)
    assert r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8


def test_token_id_prompts_and_batch(client, tokenizer):
    ids = tokenizer(PROMPT).input_ids
    by_text = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=6, temperature=0)
    by_ids = client.completions.create(model=MODEL_NAME, prompt=ids, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    batch = client.completions.create(model=MODEL_NAME, prompt=[ids, tokenizer("Hello").input_ids], max_tokens=4,
                                      temperature=0, n=2)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    # greedy: both samples of the first prompt equal the single greedy run (prefix of its 6 tokens)
    assert batch.choices[0].text == batch.choices[1].text
    assert by_text.choices[0].text.startswith(batch.choices[0].text)


def test_chat_uses_the_chat_template(client, hf_model, tokenizer):
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expected = _hf_greedy(hf_model, tokenizer, prompt_ids, 6)
    r = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_completion_tokens=6, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == tokenizer.decode(expected)
    assert r.usage.prompt_tokens == len(tokenizer(prompt_ids, add_special_tokens=False).input_ids)
    assert r.usage.completion_tokens == 6


def test_streaming_completion_equals_non_streaming(client):
    full = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=10, temperature=0,
                                     extra_body={"ignore_eos": True})
    chunks = list(client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_chat_deltas(client):
    messages = [{"role": "user", "content": "Name a colour."}]
    full = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=8, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_raw_sse_ends_with_done(server):
    body = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_n_samples_and_seed_reproducibility(client):
    kw = dict(model=MODEL_NAME, prompt="Once upon a time", max_tokens=6, temperature=1.0,
              extra_body={"ignore_eos": True})
    a = client.completions.create(n=2, seed=1234, **kw)
    b = client.completions.create(n=2, seed=1234, **kw)
    other = client.completions.create(n=2, seed=4321, **kw)
    assert sorted(c.index for c in a.choices) == [0, 1]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert a.usage.completion_tokens == 12
    # fixed seeds, so these are deterministic too: the samples of one request differ, and so do other seeds'
    assert a.choices[0].text != a.choices[1].text
    assert [c.text for c in other.choices] != [c.text for c in a.choices]


def test_stop_string(client):
    free = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=16, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = free[len(free) // 2:len(free) // 2 + 3]
    assert stop.strip(), free
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop],
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == free[:free.index(stop)]


def test_completion_logprobs_match_transformers(client, hf_model, tokenizer):
    r = client.completions.create(model=MODEL_NAME, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    ids = tokenizer(PROMPT).input_ids + tokenizer(r.choices[0].text, add_special_tokens=False).input_ids
    ref = _hf_token_logprobs(hf_model, ids)[-5:]
    assert lp.token_logprobs == pytest.approx(ref, abs=2e-3)
    assert len(lp.tokens) == 5 and "".join(lp.tokens) == r.choices[0].text
    for token, token_lp, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert 3 <= len(top) <= 4
        assert top[token] == token_lp == max(top.values())  # greedy: the sampled token is the argmax
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(5)]


def test_chat_logprobs_shape(client):
    r = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                       temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob == t.logprob >= t.top_logprobs[1].logprob
        assert bytes(t.bytes).decode("utf-8") == t.token


@pytest.mark.parametrize("max_tokens", [0, 1])
def test_echo_logprobs_score_the_prompt(client, hf_model, tokenizer, max_tokens):
    ids = tokenizer(LONG_PROMPT).input_ids
    r = client.completions.create(model=MODEL_NAME, prompt=[ids], max_tokens=max_tokens, temperature=0, logprobs=1,
                                  echo=True)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) + max_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1:len(ids)] == pytest.approx(_hf_token_logprobs(hf_model, ids), abs=2e-3)
    assert r.choices[0].text.startswith(tokenizer.decode(ids))
    assert r.usage.completion_tokens == max_tokens


def test_prefix_cache_reported_in_usage(client):
    first = client.completions.create(model=MODEL_NAME, prompt=LONG_PROMPT + " Again:", max_tokens=1)
    second = client.completions.create(model=MODEL_NAME, prompt=LONG_PROMPT + " Again:", max_tokens=1)
    assert second.usage.prompt_tokens_details.cached_tokens >= 16  # at least one full block
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens_details.cached_tokens


def _metrics(server) -> dict[str, float]:
    """/metrics read by prometheus_client's own parser, keyed `name{label="value",...}` (labels in served order)."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{server.base_url}/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def test_metrics_count_tokens_and_requests(client, server, engine, idle_stats):
    idle_stats(engine)
    before = _metrics(server)
    r = client.completions.create(model=MODEL_NAME, prompt=["a b c", "d e f g"], max_tokens=7, temperature=0,
                                  extra_body={"ignore_eos": True})
    idle_stats(engine)
    after = _metrics(server)
    label = f'{{model_name="{MODEL_NAME}"}}'

    def delta(name):
        return after[name] - before.get(name, 0.0)

    assert delta(f"kvant:generation_tokens_total{label}") == r.usage.completion_tokens == 14
    assert delta(f"kvant:prompt_tokens_total{label}") <= r.usage.prompt_tokens  # cached tokens are not prefilled
    assert delta(f"kvant:e2e_request_latency_seconds_count{label}") == 2
    assert delta(f"kvant:time_to_first_token_seconds_count{label}") == 2
    assert after[f"kvant:num_requests_running{label}"] == 0
    assert after[f'kvant:time_to_first_token_seconds_bucket{{le="+Inf",model_name="{MODEL_NAME}"}}'] == \
        after[f"kvant:time_to_first_token_seconds_count{label}"]
