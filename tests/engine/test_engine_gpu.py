"""The engine on CUDA: Triton kernels, CUDA graphs for decode, GPU memory sizing."""
import pytest
import torch

from kvant.engine.llm import LLM
from kvant.engine.sampling_params import SamplingParams

from .conftest import TINY, reference_greedy

pytestmark = pytest.mark.gpu

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def cuda_tiny(tiny_model):
    import copy

    return copy.deepcopy(tiny_model).to("cuda")


def prompts(n):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(2, TINY.vocab_size, (int(torch.randint(1, 60, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


@pytest.mark.parametrize("cfg", [dict(), dict(enforce_eager=True), dict(num_kv_blocks=24, max_model_len=96),
                                 dict(max_num_batched_tokens=16, max_num_seqs=5), dict(async_scheduling=False)])
def test_cuda_greedy_matches_reference_forward(cuda_tiny, cfg):
    ps = prompts(20)
    expected = [reference_greedy(cuda_tiny, p, 24) for p in ps]
    llm = LLM.from_model(cuda_tiny, None, gpu_memory_utilization=0.3, max_num_seqs=cfg.pop("max_num_seqs", 32),
                         **cfg)
    assert bool(llm.engine.runner.graphs) == (not cfg.get("enforce_eager", False))
    assert llm.engine.async_scheduling == (not cfg.get("enforce_eager") and cfg.get("async_scheduling", True))
    outs = llm.generate(ps, GREEDY)
    assert [o.outputs[0].token_ids for o in outs] == expected
    bm = llm.engine.block_manager
    assert bm.num_free_blocks == bm.num_blocks
    if "num_kv_blocks" in cfg:
        assert llm.stats().num_preemptions > 0


def test_mixed_batch_samples_in_the_graph(cuda_tiny):
    """Greedy, seeded and top-k rows in one graph batch: greedy rows equal the reference, top_k=1 rows (sampled
    outside the graph) too, seeded rows reproduce across runs and do sample."""
    ps = prompts(12)
    expected = [reference_greedy(cuda_tiny, p, 24) for p in ps]
    llm = LLM.from_model(cuda_tiny, None, gpu_memory_utilization=0.3, max_num_seqs=16)
    params = [GREEDY if i % 3 == 0 else
              SamplingParams(temperature=1.0, top_k=1, max_tokens=24, ignore_eos=True) if i % 3 == 1 else
              SamplingParams(temperature=1.5, seed=i, max_tokens=24, ignore_eos=True) for i in range(12)]
    first = [o.outputs[0].token_ids for o in llm.generate(ps, params)]
    again = [o.outputs[0].token_ids for o in llm.generate(ps, params)]
    for i in range(12):
        if i % 3 < 2:
            assert first[i] == expected[i], i
        else:
            assert first[i] == again[i], i
    assert any(first[i] != expected[i] for i in range(2, 12, 3))  # temperature 1.5 does sample
    bm = llm.engine.block_manager
    assert bm.num_free_blocks == bm.num_blocks


def test_async_scheduling_equals_the_synchronous_engine(cuda_tiny):
    """Greedy, seeded and stop-token rows with the graphs launched ahead of the host (the default on CUDA) give
    the synchronous engine's tokens and finish reasons, and leave no block or launched step behind."""
    ps = prompts(16)
    expected = [reference_greedy(cuda_tiny, p, 24) for p in ps]
    params = [GREEDY if i % 3 == 0 else
              SamplingParams(temperature=0.9, seed=i, max_tokens=20 + i % 5, ignore_eos=True) if i % 3 == 1 else
              SamplingParams(temperature=0, max_tokens=24, stop_token_ids=[expected[i][6]]) for i in range(16)]
    runs = []
    for flag in (False, True):
        llm = LLM.from_model(cuda_tiny, None, gpu_memory_utilization=0.3, max_num_seqs=8, async_scheduling=flag)
        outs = llm.generate(ps, params)
        runs.append([(o.outputs[0].token_ids, o.outputs[0].finish_reason) for o in outs])
        bm = llm.engine.block_manager
        assert bm.num_free_blocks == bm.num_blocks and llm.engine._launched is None
    assert runs[0] == runs[1]
    assert [runs[1][i][0] for i in range(0, 16, 3)] == [expected[i] for i in range(0, 16, 3)]
    assert all(runs[1][i][1] == "stop" for i in range(2, 16, 3))
