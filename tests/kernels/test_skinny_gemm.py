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


@pytest.mark.parametrize("m,k,n,config", [(1, 512, 96, (64, 256, 4, 4, 2)), (3, 400, 70, (64, 256, 4, 3, 1)),
                                          (17, 1024, 128, (128, 256, 4, 4, 2))])
@pytest.mark.parametrize("wdtype", [torch.float8_e4m3fn, torch.int8])
@pytest.mark.parametrize("dtype,bias", [(torch.bfloat16, False), (torch.float16, True)])
def test_8bit_weight_matches_reference(m, k, n, config, wdtype, dtype, bias):
    # weight-only W8A16: FP8 e4m3 / INT8 weights widened in registers, the per-row scale (then the bias) applied to
    # the summed output; K and N off the tile, several K splits; against both references
    from kvant.kernels.w8a16_gemm import w8a16_gemm_ref

    g = torch.Generator().manual_seed(m * 1000 + k + n)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) * 20).clamp(-127, 127)
    w = w.round().to(torch.int8) if wdtype == torch.int8 else w.to(wdtype)
    scale = torch.rand(n, generator=g) / (20 * k**0.5) + 1e-4
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    got = skinny_gemm.skinny_gemm_triton(x, w, b, config, scale=scale)
    want = skinny_gemm.skinny_gemm_ref(x, w, b, scale=scale)
    torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)
    plain = w8a16_gemm_ref(x, w, scale[:, None]).float() + (b.float() if bias else 0)
    torch.testing.assert_close(got.float(), plain, atol=3e-2, rtol=3e-2)


def test_8bit_weight_rejects_bad_operands():
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    w = torch.zeros(32, 64, dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="needs its per-row scale"):
        skinny_gemm.skinny_gemm_triton(x, w.view(torch.int8))
    with pytest.raises(ValueError, match="scale must be contiguous fp32"):
        skinny_gemm.skinny_gemm_triton(x, w, scale=torch.ones(32, 1))
    with pytest.raises(ValueError, match="FP8 e4m3 or INT8"):
        skinny_gemm.skinny_gemm_triton(x, torch.zeros(32, 64, dtype=torch.bfloat16), scale=torch.ones(32))


def test_pick_races_an_8bit_weight_against_the_w8a16_gemm(monkeypatch, tmp_path):
    monkeypatch.setenv("KVANT_HOME", str(tmp_path))
    skinny_gemm._table.cache_clear()
    monkeypatch.setattr(skinny_gemm.torch.cuda, "get_device_name", lambda device=None: "card")
    from kvant.kernels import w8a16_gemm

    baseline = []
    monkeypatch.setattr(w8a16_gemm, "w8a16_gemm_triton",
                        lambda x, w, s: baseline.append(w.dtype) or w8a16_gemm.w8a16_gemm_ref(x, w, s[:, None]))
    w = (torch.randn(64, 256) * 10).to(torch.float8_e4m3fn)
    times = iter([10.0] + [9.0, 5.0] + [9.0] * 10)  # the baseline, then each candidate
    got = skinny_gemm.pick(w, 2, False, timer=lambda fn: (fn(), next(times))[1], x_dtype=torch.bfloat16)
    assert got == skinny_gemm.candidates(2, w_bytes=1)[1] and got[1] == 256  # 8-bit: twice the K of a 16-bit tile
    assert baseline and set(baseline) == {torch.float8_e4m3fn}
    key = f"v{skinny_gemm.KERNEL_VERSION}|card|float8_e4m3fn|K256|N64|m2||xbfloat16|base{skinny_gemm.W8_BASELINE}"
    assert key in skinny_gemm._table()
    with pytest.raises(ValueError, match="without silu_mul"):
        skinny_gemm.pick(w, 2, False, silu_mul=True, x_dtype=torch.bfloat16)
    skinny_gemm._table.cache_clear()
