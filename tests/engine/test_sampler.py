import math

import pytest
import torch

from kvant.engine.sampler import Sampler, apply_penalties, apply_top_k_top_p, top_logprobs
from kvant.engine.sampling_params import SamplingParams
from kvant.engine.sequence import Sequence


def seq(seq_id=0, prompt=(0,), outputs=(), index=0, **params):
    s = Sequence(seq_id, f"r{seq_id}", index, list(prompt), SamplingParams(**params), 16)
    for t in outputs:
        s.append_token(t)
    return s


def test_greedy_is_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9], [3.0, 0.0, 0.0, 0.0]])
    out = Sampler("cpu")(logits, [seq(0, temperature=0), seq(1, temperature=0)])
    assert out.token_ids == [1, 0] and out.logprobs == [None, None]


def test_penalties_match_hand_computed_values():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    s = seq(prompt=[0], outputs=[1, 3, 3], repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    apply_penalties(logits, [s])
    # t0 in prompt, positive: 2/2; t1 once in output, negative: -1*2 - 0.25 - 0.5; t2 unseen;
    # t3 twice in output, positive: 3/2 - 2*0.25 - 0.5
    torch.testing.assert_close(logits, torch.tensor([[1.0, -2.75, 0.5, 0.5]]))


def test_penalties_leave_other_rows_alone():
    logits = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    apply_penalties(logits, [seq(0, prompt=[1]), seq(1, prompt=[1], repetition_penalty=4.0)])
    torch.testing.assert_close(logits, torch.tensor([[1.0, 2.0], [1.0, 0.5]]))


def test_min_tokens_masks_eos_and_stop_ids_until_reached():
    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0]] * 2)
    s_early = seq(0, outputs=[2], min_tokens=3, stop_token_ids=[1], temperature=0)
    s_done = seq(1, outputs=[2, 2, 2], min_tokens=3, stop_token_ids=[1], temperature=0)
    out = Sampler("cpu")(logits, [s_early, s_done], eos_token_ids=(0,))
    assert out.token_ids == [2, 0]


def test_top_k_top_p_masks_as_vllm():
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = p.log()
    kept = lambda k, top_p: torch.isfinite(apply_top_k_top_p(logits, torch.tensor([k]), torch.tensor([top_p])))[0]
    assert kept(4, 0.7).tolist() == [True, True, False, False]  # 0.5 < 0.7 <= 0.8
    assert kept(4, 0.5).tolist() == [True, False, False, False]
    assert kept(4, 0.81).tolist() == [True, True, True, False]
    assert kept(2, 2.0).tolist() == [True, True, False, False]
    assert kept(1, 0.99).tolist() == [True, False, False, False]


def test_logprobs_are_raw_log_softmax_with_sampled_token():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.5]])
    s = seq(temperature=0, logprobs=2, repetition_penalty=1.5, prompt=[2])
    out = Sampler("cpu")(logits, [s])
    z = math.log(sum(math.exp(x) for x in (1.0, 2.0, 3.0, 0.5)))
    # the penalty makes token 1 win (3/1.5 = 2 ties; argmax takes the first), logprobs ignore the penalty
    assert out.token_ids == [1]
    assert out.logprobs[0].keys() == {1, 2}
    assert out.logprobs[0][2] == pytest.approx(3.0 - z) and out.sampled_logprobs[0] == pytest.approx(2.0 - z)


def test_top_logprobs_adds_sampled_token_outside_top_k():
    lp = torch.tensor([[-0.1, -3.0, -2.0]])
    assert top_logprobs(lp, torch.tensor([1]), [1]) == [{1: pytest.approx(-3.0), 0: pytest.approx(-0.1)}]
    (d,) = top_logprobs(lp, torch.tensor([0]), [0])
    assert d == {0: pytest.approx(-0.1)}


def test_seeded_sampling_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    alone = Sampler("cpu", seed=1)
    a_tokens = [alone(logits[1:2], [seq(7, seed=42)]).token_ids[0] for _ in range(5)]
    batched = Sampler("cpu", seed=2)
    rows = [seq(1), seq(7, seed=42), seq(3, temperature=0.5)]
    b_tokens = [batched(logits, rows).token_ids[1] for _ in range(5)]
    assert a_tokens == b_tokens
    assert len(set(a_tokens)) > 1  # it does sample


def test_sampling_frequencies_follow_top_k_renormalized_probs():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    sampler = Sampler("cpu", seed=0)
    rows = [seq(i, top_k=2) for i in range(4000)]
    out = sampler(p.log().repeat(4000, 1), rows)
    counts = torch.bincount(torch.tensor(out.token_ids), minlength=4).float() / 4000
    assert counts[2:].sum() == 0
    assert counts[0].item() == pytest.approx(0.5 / 0.8, abs=0.03)


def test_temperature_sharpens():
    p = torch.tensor([0.6, 0.4])
    rows = [seq(i, temperature=0.5) for i in range(4000)]
    out = Sampler("cpu", seed=3)(p.log().repeat(4000, 1), rows)
    frac0 = out.token_ids.count(0) / 4000
    assert frac0 == pytest.approx(0.36 / (0.36 + 0.16), abs=0.03)  # p^(1/T) renormalized


def test_min_p_drops_unlikely_tokens():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    rows = [seq(i, min_p=0.5) for i in range(2000)]
    out = Sampler("cpu", seed=4)(p.log().repeat(2000, 1), rows)
    assert set(out.token_ids) == {0, 1}  # threshold 0.25
