"""Acceptance: the default model (SmolLM2-135M, fp32 on CPU) through the engine equals transformers, token for token."""
import pytest
import torch

from kvant.engine.llm import LLM
from kvant.engine.sampling_params import SamplingParams

from .conftest import NEW_TOKENS, hf_generate

GREEDY = SamplingParams(temperature=0, max_tokens=NEW_TOKENS)
pytestmark = pytest.mark.slow


def assert_pool_empty(llm):
    bm = llm.engine.block_manager
    assert bm.num_free_blocks == bm.num_blocks and all(b.ref_count == 0 for b in bm.blocks)


def test_batch_greedy_matches_transformers(kvant_model, tokenizer, real_prompts, hf_greedy):
    llm = LLM.from_model(kvant_model, tokenizer, max_model_len=512)
    outs = llm.generate(real_prompts, GREEDY)  # all 24 requests in flight together
    for i, (out, ref) in enumerate(zip(outs, hf_greedy)):
        assert out.outputs[0].token_ids == ref, f"prompt {i} ({len(real_prompts[i])} tokens)"
        text = tokenizer.decode(ref, skip_special_tokens=True)
        assert out.outputs[0].text == text
    stats = llm.stats()
    assert stats.generation_tokens_total == sum(len(r) for r in hf_greedy)
    assert stats.prompt_tokens_total == sum(len(p) for p in real_prompts)
    assert_pool_empty(llm)


@pytest.mark.parametrize("cfg, check", [
    # (a) a pool of 40 blocks (640 tokens) for 24 sequences of up to 194 tokens: the newest get preempted
    (dict(num_kv_blocks=40, max_model_len=512), "preempted"),
    # (c) at most 48 tokens per step: long prompts are prefilled in chunks, next to other sequences' decodes
    (dict(max_num_batched_tokens=48), "chunked"),
])
def test_greedy_matches_transformers_under_pressure(kvant_model, tokenizer, real_prompts, hf_greedy, cfg, check):
    n, new = 12, 32  # half the prompts, half the tokens: the same code paths at half the CI time
    llm = LLM.from_model(kvant_model, tokenizer, **cfg)
    outs = llm.generate(real_prompts[:n], SamplingParams(temperature=0, max_tokens=new))
    assert [o.outputs[0].token_ids for o in outs] == [r[:new] for r in hf_greedy[:n]]
    if check == "preempted":
        assert llm.stats().num_preemptions > 0
    else:
        assert max(len(p) for p in real_prompts[:n]) > cfg["max_num_batched_tokens"]
    assert_pool_empty(llm)


@pytest.fixture(scope="module")
def shared_prefix_case(real_prompts, hf_model):
    prefix = real_prompts[5][:100]  # 100-token shared context, then each prompt's own question
    prompts = [prefix + real_prompts[i][:8] for i in range(4)]
    return prompts, hf_generate(hf_model, prompts, 16)


@pytest.mark.parametrize("caching", [True, False])
def test_shared_prefix_with_and_without_prefix_caching(kvant_model, tokenizer, shared_prefix_case, caching):
    prompts, refs = shared_prefix_case
    llm = LLM.from_model(kvant_model, tokenizer, enable_prefix_caching=caching)
    params = SamplingParams(temperature=0, max_tokens=16)
    first = llm.generate(prompts[:1], params)
    rest = llm.generate(prompts[1:], params)
    hits = [o.num_cached_tokens for o in first + rest]
    assert hits == ([0, 96, 96, 96] if caching else [0, 0, 0, 0])  # 6 full blocks of 16
    assert [o.outputs[0].token_ids for o in first + rest] == refs
    assert llm.stats().prefix_cache_hit_rate == (pytest.approx(3 * 96 / sum(map(len, prompts))) if caching else 0)
    assert_pool_empty(llm)


def test_prompt_logprobs_equal_transformers(kvant_model, tokenizer, real_prompts, hf_model):
    prompts = [real_prompts[i] for i in (1, 4, 5)]
    llm = LLM.from_model(kvant_model, tokenizer, max_num_batched_tokens=64)  # the 130-token prompt is chunked
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1))
    with torch.inference_mode():
        for p, out in zip(prompts, outs):
            ref = hf_model(torch.tensor([p])).logits[0].float().log_softmax(-1)  # [L, V]
            got = out.prompt_logprobs
            assert got[0] is None and len(got) == len(p)
            for j in range(1, len(p)):
                assert got[j][p[j]] == pytest.approx(ref[j - 1, p[j]].item(), abs=1e-4)
                top = int(ref[j - 1].argmax())
                assert got[j][top] == pytest.approx(ref[j - 1, top].item(), abs=1e-4)
    assert_pool_empty(llm)


def test_chat_and_stop_strings(kvant_model, tokenizer):
    llm = LLM.from_model(kvant_model, tokenizer)
    conv = [{"role": "user", "content": "Name three colors."}]
    (plain,) = llm.chat([conv], SamplingParams(temperature=0, max_tokens=24))
    expected_prompt = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert plain.prompt == expected_prompt
    assert plain.prompt_token_ids == tokenizer(expected_prompt, add_special_tokens=False).input_ids
    text = plain.outputs[0].text
    words = text.split()
    assert len(words) >= 3
    stop = words[2]
    (stopped,) = llm.chat([conv], SamplingParams(temperature=0, max_tokens=24, stop=[stop, "\x00never"]))
    out = stopped.outputs[0]
    assert out.text == text[:text.index(stop)]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop)
    assert_pool_empty(llm)
