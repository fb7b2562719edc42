"""The greedy/sampling kernel (interpreter on CPU, compiled on a GPU) against its torch reference."""
import pytest
import torch

from kvant.kernels import sampling

from .compile_check import run_without_interpreter


def _case(b, v, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, v, generator=g) * 3).to(dtype)
    temperature = torch.tensor([0.0, 1.0, 0.7, 1.3, 0.0, 2.0, 0.5][:b] + [1.0] * max(0, b - 7))
    seeds = torch.randint(-2**62, 2**62, (b,), generator=g)
    return logits.to(device), temperature.to(device), seeds.to(device)


def _check(logits, temperature, seeds):
    got = sampling.sample_tokens_triton(logits, temperature, seeds)
    want = sampling.sample_tokens_ref(logits, temperature, seeds)
    assert got.dtype == torch.int64 and got.shape == want.shape
    greedy = temperature == 0
    # greedy rows: torch.argmax exactly (first index on ties)
    assert torch.equal(got[greedy].cpu(), logits[greedy].float().argmax(-1).cpu())
    # sampled rows: the reference's winner, or a score within float rounding of it (the GPU's log is approximate)
    x = logits.float()
    t = torch.where(greedy, 1.0, temperature)[:, None]
    scores = x / t - torch.log(-torch.log(sampling.uniform_ref(seeds, x.shape[1])))
    best = scores.gather(1, want[:, None])[:, 0]
    chosen = scores.gather(1, got[:, None])[:, 0]
    assert torch.all(chosen >= best - 1e-4 * (1 + best.abs())), (got, want)
    assert (got == want).float().mean() >= 0.75  # a wrong noise stream would disagree on most rows
    return got


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter test passes CPU tensors; the gpu test covers CUDA")
@pytest.mark.parametrize("b,v,dtype", [(7, 5000, torch.bfloat16), (3, 2048, torch.float32), (9, 130, torch.bfloat16)])
def test_sample_tokens_matches_reference(b, v, dtype):
    _check(*_case(b, v, dtype, "cpu", seed=b * v))


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter test passes CPU tensors")
def test_ties_take_the_first_index_and_masked_entries_never_win():
    logits = torch.full((3, 4100), float("-inf"))
    logits[0, [5, 3000, 4099]] = 1.0  # greedy tie across chunks
    logits[1, [2049, 2050]] = 0.0  # greedy tie inside the second chunk
    logits[2, 4097] = -5.0  # sampled: the only finite entry, in the last, partial chunk
    got = sampling.sample_tokens_triton(logits, torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1, 2, 3]))
    assert got.tolist() == [5, 2049, 4097]


def test_reference_sampling_follows_softmax_and_seeds():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 20000
    logits, seeds = p.log().repeat(n, 1), torch.arange(n) * 7919 + 11
    tokens = sampling.sample_tokens_ref(logits, torch.ones(n), seeds)
    freq = torch.bincount(tokens, minlength=4).float() / n
    torch.testing.assert_close(freq, p, atol=0.015, rtol=0)
    # temperature 0.5 squares the probabilities (renormalised)
    sharp = torch.bincount(sampling.sample_tokens_ref(logits, torch.full((n,), 0.5), seeds), minlength=4).float() / n
    torch.testing.assert_close(sharp, p**2 / (p**2).sum(), atol=0.015, rtol=0)
    again = sampling.sample_tokens_ref(logits[:50], torch.ones(50), seeds[:50])
    assert torch.equal(again, tokens[:50])  # same seed, same draw
    other = sampling.sample_tokens_ref(logits[:50], torch.ones(50), seeds[:50] + 1)
    assert not torch.equal(other, tokens[:50])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("b,v", [(1, 128256), (64, 151936), (5, 3000)])
def test_sample_tokens_gpu(b, v):
    _check(*_case(b, v, torch.bfloat16, "cuda", seed=b + v))


SM90_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kvant.kernels import sampling
for dtype in ("bf16", "fp32"):
    sig = dict(logits_ptr=f"*{dtype}", temp_ptr="*fp32", seed_ptr="*i64", val_ptr="*fp32", idx_ptr="*i32",
               stride_l="i64", V="i32", NUM_CHUNKS="i32", CHUNK="constexpr", PDL="constexpr")
    pdl = dtype == "bf16"
    src = ASTSource(fn=sampling._chunk_max_kernel, signature=sig, constexprs=dict(CHUNK=sampling.CHUNK, PDL=pdl))
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=8)).asm["ptx"]
    assert ".target sm_90" in ptx and "st.global" in ptx and ("griddepcontrol.wait" in ptx) == pdl
    print("compiled", dtype)
sig = dict(val_ptr="*fp32", idx_ptr="*i32", out_ptr="*i64", NUM_CHUNKS="i32", BLOCK_C="constexpr", PDL="constexpr")
src = ASTSource(fn=sampling._pick_kernel, signature=sig, constexprs=dict(BLOCK_C=64, PDL=True))
ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"]
assert "st.global" in ptx and "griddepcontrol.wait" in ptx
print("compiled pick")
sig = dict(ids_ptr="*i64", rows_ptr="*i64", tok_ptr="*i64", out_ptr="*i64", B="i32", BLOCK="constexpr")
src = ASTSource(fn=sampling._pending_ids_kernel, signature=sig, constexprs=dict(BLOCK=256))
assert "st.global" in triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"]
print("compiled pending ids")
"""


def test_sampling_kernels_compile_for_sm90():
    assert run_without_interpreter(SM90_SCRIPT).count("compiled") == 4


def _pending_case(b, r, device, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50000, (b,), generator=g)
    rows = torch.randint(-1, r, (b,), generator=g)  # about 1 in r+1 rows keeps its own id
    tokens = torch.randint(0, 50000, (r,), generator=g)
    return ids.to(device), rows.to(device), tokens.to(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter test passes CPU tensors; the gpu test covers CUDA")
@pytest.mark.parametrize("b,r", [(1, 1), (7, 300), (300, 512)])
def test_pending_input_ids_matches_reference(b, r):
    ids, rows, tokens = _pending_case(b, r, "cpu", seed=b + r)
    got = sampling.pending_input_ids_triton(ids, rows, tokens)
    want = sampling.pending_input_ids_ref(ids, rows, tokens)
    assert torch.equal(got, want)
    keep = rows < 0
    assert torch.equal(want[keep], ids[keep]) and torch.equal(want[~keep], tokens[rows[~keep]])


def test_pending_input_ids_names_bad_input():
    with pytest.raises(ValueError, match="int64"):
        sampling.pending_input_ids_triton(torch.zeros(3, dtype=torch.int32), torch.zeros(3, dtype=torch.int64),
                                          torch.zeros(4, dtype=torch.int64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pending_input_ids_gpu():
    ids, rows, tokens = _pending_case(256, 512, "cuda", seed=3)
    assert torch.equal(sampling.pending_input_ids(ids, rows, tokens), sampling.pending_input_ids_ref(ids, rows, tokens))
