"""The CPU step path (kernels.cpu_attention, rms_norm_torch, silu_and_mul_torch) against the torch references it stands in for."""
import pytest
import torch

from kvant.kernels import activation, cpu_attention, kv_store, paged_attention, rmsnorm, rope

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def _cos_sin(max_pos, d):
    freqs = torch.arange(max_pos)[:, None].float() / (10000 ** (torch.arange(0, d, 2).float() / d))[None, :]
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_torch_equals_the_reference_bit_for_bit(dtype, with_residual):
    g = torch.Generator().manual_seed(0)
    x, res = (torch.randn(7, 40, generator=g).mul(3).to(dtype) for _ in range(2))
    w = (torch.rand(40, generator=g) + 0.5).to(dtype)
    residual = res if with_residual else None
    got, want = rmsnorm.rms_norm_torch(x, w, 1e-5, residual), rmsnorm.rms_norm_ref(x, w, 1e-5, residual)
    for a, b in zip(got, want) if with_residual else [(got, want)]:
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("positions", [[4, 5, 6, 7, 8], [0, 9, 3, 31]])  # one prompt's run; decode of several
def test_rope_cpu_equals_the_reference_bit_for_bit(dtype, positions):
    g = torch.Generator().manual_seed(1)
    t, hq, hkv, d = len(positions), 6, 2, 16
    qk = torch.randn(t, hq + hkv + 3, d, generator=g).to(dtype)[:, :hq + hkv]  # strided, as a view of qkv
    cos_sin = _cos_sin(32, d)
    step = cpu_attention.plan_cpu_step(cos_sin, positions, list(range(t)), [t], [t], [[0]], 16)
    q_ref, k_ref = rope.apply_rope_ref(qk[:, :hq], qk[:, hq:], torch.tensor(positions), cos_sin)
    out = cpu_attention.rope_cpu(qk, step)
    assert out.dtype == dtype
    assert torch.equal(out[:, :hq], q_ref) and torch.equal(out[:, hq:], k_ref)


def _run(q_lens, ctx_lens, tables, bs, hq, hkv, d, dtype, g):
    """attention_cpu against store_kvcache_ref + paged_attention_prefill_ref on the same cache and inputs."""
    num_blocks = 1 + max(max(t) for t in tables)
    kc = torch.randn(num_blocks, bs, hkv, d, generator=g).to(dtype)  # earlier tokens' keys: random
    vc = torch.randn(num_blocks, bs, hkv, d, generator=g).to(dtype)
    t = sum(q_lens)
    q = torch.randn(t, hq, d, generator=g).to(dtype)
    k, v = torch.randn(t, hkv, d, generator=g).to(dtype), torch.randn(t, hkv, d, generator=g).to(dtype)
    positions, slots = [], []
    for n, c, table in zip(q_lens, ctx_lens, tables):
        positions += list(range(c - n, c))
        slots += [table[p // bs] * bs + p % bs for p in range(c - n, c)]
    step = cpu_attention.plan_cpu_step(_cos_sin(1024, d), positions, slots, q_lens, ctx_lens, tables, bs)
    width = max(len(x) for x in tables)
    bt = torch.tensor([x + [-1] * (width - len(x)) for x in tables], dtype=torch.int32)
    cu = torch.tensor([0] + [sum(q_lens[:i + 1]) for i in range(len(q_lens))], dtype=torch.int32)
    lens = torch.tensor(ctx_lens, dtype=torch.int32)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    kv_store.store_kvcache_ref(k, v, kc_ref, vc_ref, torch.tensor(slots))
    want = paged_attention.paged_attention_prefill_ref(q, kc_ref, vc_ref, cu, lens, bt, d**-0.5)
    got = cpu_attention.attention_cpu(q, k, v, kc, vc, step, d**-0.5, lambda: paged_attention.paged_attention_prefill(
        q, kc, vc, cu, lens, bt, d**-0.5))
    assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref)
    torch.testing.assert_close(got, want, **TOL[dtype])
    return step


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hq,hkv", [(9, 3), (4, 4)])
def test_one_prompt_attends_to_its_own_keys(dtype, hq, hkv):
    step = _run([37], [37], [[5, 2, 7]], 16, hq, hkv, 8, dtype, torch.Generator().manual_seed(2))
    assert step.mode == "self"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_of_one_sequence_on_consecutive_blocks_reads_a_slice(dtype):
    step = _run([1], [40], [[3, 4, 5]], 16, 9, 3, 8, dtype, torch.Generator().manual_seed(3))
    assert step.mode == "decode" and step.kv_rows == slice(48, 88) and step.kv_index is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ctx_lens,tables", [([40], [[6, 1, 4]]),  # scattered blocks
                                             ([17, 1, 33, 16], [[0, 9], [3], [8, 2, 5], [7]]),  # lengths differ
                                             ([20, 20], [[1, 4], [0, 2]])])  # same length: no mask
def test_decode_gathers_scattered_blocks_and_masks_shorter_sequences(dtype, ctx_lens, tables):
    step = _run([1] * len(ctx_lens), ctx_lens, tables, 16, 6, 2, 8, dtype, torch.Generator().manual_seed(4))
    assert step.mode == "decode" and step.kv_index.shape == (len(ctx_lens), max(ctx_lens))
    assert (step.mask is None) == (len(set(ctx_lens)) == 1)


@pytest.mark.parametrize("q_lens,ctx_lens,tables", [([5, 3], [5, 3], [[0], [1]]),  # two prompts
                                                    ([4], [20], [[2, 0]]),  # a chunk after a cached prefix
                                                    ([1, 6], [30, 6], [[1, 3], [4]])])  # decode beside a prompt
def test_other_steps_take_the_paged_path(q_lens, ctx_lens, tables):
    step = _run(q_lens, ctx_lens, tables, 16, 4, 2, 8, torch.float32, torch.Generator().manual_seed(5))
    assert step.mode == "paged"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_and_mul_torch_is_transformers_act_in_fp32(dtype):
    x = torch.randn(3, 2, 20, generator=torch.Generator().manual_seed(6)).mul(4).to(dtype)
    g, u = x[..., :10].float(), x[..., 10:].float()
    got = activation.silu_and_mul_torch(x)
    assert got.dtype == dtype and got.shape == (3, 2, 10)
    assert torch.equal(got, (torch.nn.SiLU()(g) * u).to(dtype))
    torch.testing.assert_close(got, activation.silu_and_mul_ref(x), **TOL[dtype])
