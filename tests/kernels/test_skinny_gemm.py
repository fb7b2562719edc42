"""The decode-sized 16-bit GEMM (kvant.kernels.skinny_gemm) in the Triton interpreter against its torch reference,
and its measured choice against cuBLAS (with a fake timer: which one wins is the card's business, the bookkeeping is
ours)."""
import pytest
import torch

from kvant.kernels import skinny_gemm

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="interpreter tests pass CPU tensors; test_gpu.py covers the GPU")


@pytest.mark.parametrize("m,k,n,config", [(1, 256, 96, (64, 128, 4, 3, 2)), (3, 200, 70, (64, 128, 4, 3, 1)),
                                          (17, 512, 128, (128, 256, 4, 4, 2)), (40, 136, 64, (64, 128, 4, 3, 2))])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_reference(m, k, n, config, dtype, bias):
    # K and N off the tile (200, 70, 136), several K splits (reduced in the kernel), rows padded to the MMA's 16
    g = torch.Generator().manual_seed(m * 1000 + k + n)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) / k**0.5).to(dtype)
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    got = skinny_gemm.skinny_gemm_triton(x, w, b, config)
    torch.testing.assert_close(got.float(), skinny_gemm.skinny_gemm_ref(x, w, b).float(), atol=2e-2, rtol=2e-2)


def test_rejects_bad_operands():
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="same dtype"):
        skinny_gemm.skinny_gemm_triton(x, torch.randn(32, 64, dtype=torch.float16))
    with pytest.raises(ValueError, match="at most 64 rows"):
        skinny_gemm.skinny_gemm_triton(torch.randn(65, 64, dtype=torch.bfloat16), torch.randn(32, 64).bfloat16())


def test_pick_keeps_cublas_unless_clearly_faster(monkeypatch, tmp_path):
    monkeypatch.setenv("KVANT_HOME", str(tmp_path))
    skinny_gemm._table.cache_clear()
    monkeypatch.setattr(skinny_gemm.torch.cuda, "get_device_name", lambda device=None: "card")
    w = torch.randn(64, 128).bfloat16()
    calls = []

    def timer(fn):  # cuBLAS first, then one time per candidate: only the third candidate is 5 % faster
        calls.append(fn)
        return {1: 100.0, 4: 95.0}.get(len(calls), 99.0)

    first = skinny_gemm.pick(w, 2, False, timer=timer)
    assert first == skinny_gemm.candidates(2)[2]
    assert len(calls) == 1 + len(skinny_gemm.candidates(2))
    # kept on disk: a fresh process (cache cleared) reads it without timing anything
    skinny_gemm._table.cache_clear()
    assert skinny_gemm.pick(w, 2, False, timer=lambda fn: pytest.fail("re-measured")) == first
    assert (tmp_path / "skinny_gemm.json").exists()
    # nothing clearly faster than cuBLAS (within 3 %): cuBLAS stays
    skinny_gemm._table.cache_clear()
    (tmp_path / "skinny_gemm.json").unlink()
    assert skinny_gemm.pick(w, 4, False, timer=lambda fn: 100.0) is None
    skinny_gemm._table.cache_clear()


# ---- SiLU·mul fused into the x load: x is the MLP's gate_up [M, 2K] ----
@pytest.mark.parametrize("m,k,n,config", [(1, 200, 70, (64, 128, 4, 3, 2)), (3, 80, 96, (64, 128, 4, 3, 1)),
                                          (17, 200, 130, (128, 128, 4, 4, 1))])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bias", [False, True])
def test_silu_mul_matches_reference(m, k, n, config, dtype, bias):
    # K off the tile (200: two K tiles in two splits, 80: one), N off the tile, 17 rows in a 32-row MMA tile
    g = torch.Generator().manual_seed(m * 1000 + k + n + 7)
    gate_up = torch.randn(m, 2 * k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) / k**0.5).to(dtype)
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    got = skinny_gemm.skinny_gemm_triton(gate_up, w, b, config, silu_mul=True)
    want = skinny_gemm.skinny_gemm_ref(gate_up, w, b, silu_mul=True)
    torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_silu_mul_activations_equal_the_unfused_kernel(dtype):
    # w = I makes each output the activation itself (every sum adds exact zeros, over two K splits here): the fused
    # load must round silu(g) * u exactly as kvant.kernels.activation's kernel does
    from kvant.kernels.activation import silu_and_mul_triton

    k = 200
    gate_up = (3 * torch.randn(5, 2 * k, generator=torch.Generator().manual_seed(1))).to(dtype)
    got = skinny_gemm.skinny_gemm_triton(gate_up, torch.eye(k, dtype=dtype), None, (64, 128, 4, 4, 2), silu_mul=True)
    assert torch.equal(got, silu_and_mul_triton(gate_up))


def test_silu_mul_rejects_bad_operands():
    w = torch.randn(32, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"with silu_mul needs 16-bit x \[M, 2K\].*got x torch.bfloat16 \(2, 64\)"):
        skinny_gemm.skinny_gemm_triton(torch.randn(2, 64, dtype=torch.bfloat16), w, silu_mul=True)
    with pytest.raises(ValueError, match="same dtype"):
        skinny_gemm.skinny_gemm_triton(torch.randn(2, 128, dtype=torch.float16), w, silu_mul=True)
    with pytest.raises(ValueError, match="at most 64 rows"):
        skinny_gemm.skinny_gemm_triton(torch.randn(65, 128, dtype=torch.bfloat16), w, silu_mul=True)


def test_pick_silu_mul_races_the_unfused_pair_under_its_own_key(monkeypatch, tmp_path):
    monkeypatch.setenv("KVANT_HOME", str(tmp_path))
    skinny_gemm._table.cache_clear()
    monkeypatch.setattr(skinny_gemm.torch.cuda, "get_device_name", lambda device=None: "card")
    w = torch.randn(64, 128).bfloat16()
    assert skinny_gemm.pick(w, 2, False, timer=lambda fn: 100.0) is None  # unfused: cuBLAS stays
    calls = []

    def timer(fn):  # the unfused pair first, then one time per fused candidate: only the second is 5 % faster
        calls.append(fn)
        return {1: 100.0, 3: 95.0}.get(len(calls), 99.0)

    # a separate entry: measured although the unfused one for the same shape and rows is on disk
    assert skinny_gemm.pick(w, 2, False, timer=timer, silu_mul=True) == skinny_gemm.candidates(2, silu_mul=True)[1]
    assert len(calls) == 1 + len(skinny_gemm.candidates(2, silu_mul=True))
    baseline, fused = calls[0](), calls[2]()  # silu_and_mul then F.linear, and the fused kernel, on one gate_up
    assert baseline.shape == (2, 64)
    torch.testing.assert_close(fused.float(), baseline.float(), atol=2e-2 * baseline.abs().max().item(),
                               rtol=2e-2)  # pick's own check: the bf16 sums of 128 unscaled terms
    key = f"v{skinny_gemm.KERNEL_VERSION}|card|bfloat16|K128|N64|m2|"  # the unfused key keeps its old form
    assert skinny_gemm._table() == {key: None, key + "|silu_mul": list(skinny_gemm.candidates(2, silu_mul=True)[1])}
    skinny_gemm._table.cache_clear()
    assert skinny_gemm.pick(w, 2, False, timer=lambda fn: pytest.fail("re-measured"), silu_mul=True) == tuple(
        skinny_gemm.candidates(2, silu_mul=True)[1])
    skinny_gemm._table.cache_clear()
