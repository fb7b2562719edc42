"""Triton GEMMs (interpreter on CPU) against their torch references on fresh random inputs."""
import pytest
import torch

from kvant.kernels import fp8_gemm, int8_gemm, w4a16_gemm, w8a16_gemm

from .naive import pack_rows, pack_rows_fast

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="interpreter tests pass CPU tensors; test_gpu.py covers the GPU")

FP8 = torch.float8_e4m3fn
TOL = {torch.bfloat16: dict(atol=2e-2, rtol=1.6e-2), torch.float16: dict(atol=2e-3, rtol=2e-3)}


def test_fast_packer_matches_loop_packer():
    q = torch.randint(-8, 8, (5, 24), generator=torch.Generator().manual_seed(0))
    assert torch.equal(pack_rows_fast(q), pack_rows(q))


@pytest.mark.parametrize("m,n,k,group", [(1, 830, 544, 32), (4, 64, 256, 128), (16, 72, 128, 64),
                                         (33, 130, 256, 64), (70, 96, 544, 544)])
@pytest.mark.parametrize("asym", [False, True])
def test_w4a16(m, n, k, group, asym):
    g = torch.Generator().manual_seed(m * 1000 + n + asym)
    dtype = torch.bfloat16 if m % 2 else torch.float16
    x, packed, scale, zp = _int4_case(g, m, n, k, group, asym, dtype)
    out = w4a16_gemm.w4a16_gemm_triton(x, packed, scale, group, zp)
    torch.testing.assert_close(out, w4a16_gemm.w4a16_gemm_ref(x, packed, scale, group, zp), **TOL[dtype])


@pytest.mark.parametrize("m,n,k,group", [(1, 830, 544, 32), (2, 64, 1024, 128), (4, 72, 256, 64), (16, 40, 544, 544)])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("kernel", ["w4a16_gemm_planes_triton", "w4a16_dequant_mm_triton"])
def test_w4a16_other_kernels(m, n, k, group, asym, kernel):
    # the tensor-core planes kernel (per-word scales where a tile spans groups) and dequantize + GEMM
    g = torch.Generator().manual_seed(m * 7 + n + asym)
    dtype = torch.bfloat16 if m % 2 else torch.float16
    x, packed, scale, zp = _int4_case(g, m, n, k, group, asym, dtype)
    ref = w4a16_gemm.w4a16_gemm_ref(x, packed, scale, group, zp)
    out = getattr(w4a16_gemm, kernel)(x, packed, scale, group, zp)
    tol = dict(TOL[dtype])
    if kernel == "w4a16_dequant_mm_triton":  # the weight itself is rounded to 16 bits before the GEMM
        tol["atol"] = max(tol["atol"], 1e-2 * ref.abs().max().item())
    torch.testing.assert_close(out, ref, **tol)


# (130, 544, 32): N off every tile and off the 8 rows of a packed zero-point word, K off BLOCK_K, as the (830, 544)
# shape of the other tests, at a sixth of its interpreter time (16 one-row GEMVs per case)
@pytest.mark.parametrize("n,k,group", [(130, 544, 32), (64, 1024, 128), (72, 256, 64)])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("grouped", [False, True])
def test_w4a16_gemv(n, k, group, asym, grouped):
    # the batch-1 GEMV that builds floats from nibbles by bit tricks; split K (in-kernel reduction) and one split
    g = torch.Generator().manual_seed(n + k + asym + 2 * grouped)
    q = torch.randint(-8, 8, (n, k), generator=g)
    scale = (torch.rand(n, k // group, generator=g) * 0.02 + 0.001).to(torch.bfloat16)
    zp = None
    if asym:
        z = torch.randint(-8, 8, (n + (-n) % 8, k // group), generator=g)
        zp = pack_rows_fast(z.t().contiguous()).t().contiguous()
    x = torch.randn(1, k, generator=g).to(torch.bfloat16)
    packed = pack_rows_fast(q)
    ref = w4a16_gemm.w4a16_gemm_ref(x, packed, scale, group, zp)
    for waves in (0, 4):  # 0: one split; 4: about 4 programs per (interpreter) SM, so K is split
        for pairs in (False, True):  # pairs: the subtract-free bit trick (grouped tiles only)
            out = w4a16_gemm.w4a16_gemv_triton(x, packed, scale, group, zp,
                                               config=(16, 128, 4, 2, waves, grouped, pairs))
            torch.testing.assert_close(out, ref, **TOL[torch.bfloat16])


def test_w4a16_dequantize_is_exact_in_fp32():
    g = torch.Generator().manual_seed(5)
    q, scale = torch.randint(-8, 8, (24, 256), generator=g), torch.rand(24, 4, generator=g)
    z = torch.randint(-8, 8, (24, 4), generator=g)
    zp = pack_rows_fast(z.t().contiguous()).t().contiguous()
    packed = pack_rows_fast(q)
    for point in (None, zp):
        out = w4a16_gemm.dequant_w4_triton(packed, scale, 64, point, torch.float32)
        assert torch.equal(out, w4a16_gemm.dequant_w4_ref(packed, scale, 64, point))


def test_w4a16_rejects_group_not_dividing_k():
    x = torch.randn(1, 64)
    with pytest.raises(ValueError, match="group_size"):
        w4a16_gemm.w4a16_gemm_triton(x, torch.zeros(8, 8, dtype=torch.int32), torch.ones(8, 2), 48)


@pytest.mark.parametrize("m,n,k", [(1, 830, 545), (7, 64, 128), (40, 130, 300)])
@pytest.mark.parametrize("wdtype", [torch.int8, FP8])
def test_w8a16(m, n, k, wdtype):
    g = torch.Generator().manual_seed(m + n + k)
    dtype = torch.bfloat16
    w = (torch.randn(n, k, generator=g) * 40).clamp(-127, 127).to(wdtype)
    scale = torch.rand(n, 1, generator=g) * 0.01
    x = torch.randn(m, k, generator=g).to(dtype)
    torch.testing.assert_close(w8a16_gemm.w8a16_gemm_triton(x, w, scale), w8a16_gemm.w8a16_gemm_ref(x, w, scale),
                               **TOL[dtype])


@pytest.mark.parametrize("name", ["fp8", "int8"])
def test_quant_per_token(name):
    x = torch.randn(37, 545, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    x[5] = 0  # an all-zero row
    mod = fp8_gemm if name == "fp8" else int8_gemm
    q, s = getattr(mod, f"quant_{name}_per_token_triton")(x)
    q_ref, s_ref = getattr(mod, f"quant_{name}_per_token_ref")(x)
    torch.testing.assert_close(s, s_ref, atol=0, rtol=1e-6)
    torch.testing.assert_close(q.float(), q_ref.float(), atol=0, rtol=0)


def test_quant_fp8_per_tensor():
    x = torch.randn(9, 100, generator=torch.Generator().manual_seed(4)) * 3
    scale = torch.tensor([0.004])  # saturates the largest values
    q, s = fp8_gemm.quant_fp8_per_tensor_triton(x, scale)
    q_ref, s_ref = fp8_gemm.quant_fp8_per_tensor_ref(x, scale)
    assert s.shape == s_ref.shape == (1, 1)
    torch.testing.assert_close(q.float(), q_ref.float(), atol=0, rtol=0)


@pytest.mark.parametrize("m,n,k", [(1, 830, 545), (20, 64, 256), (130, 96, 160)])
@pytest.mark.parametrize("name", ["fp8", "int8"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_w8a8_gemm(m, n, k, name, with_bias):
    g = torch.Generator().manual_seed(m + n + k + with_bias)
    mod = fp8_gemm if name == "fp8" else int8_gemm
    quant = getattr(mod, f"quant_{name}_per_token_ref")
    xq, xs = quant(torch.randn(m, k, generator=g))
    wq, ws = quant(torch.randn(n, k, generator=g))
    bias = torch.randn(n, generator=g).to(torch.bfloat16) if with_bias else None
    out = getattr(mod, f"{name}_gemm_triton")(xq, xs, wq, ws, torch.bfloat16, bias)
    ref = getattr(mod, f"{name}_gemm_ref")(xq, xs, wq, ws, torch.bfloat16, bias)
    torch.testing.assert_close(out, ref, **TOL[torch.bfloat16])


def test_w8a8_per_tensor_scales():
    g = torch.Generator().manual_seed(11)
    xq, _ = fp8_gemm.quant_fp8_per_token_ref(torch.randn(24, 64, generator=g))
    wq, _ = fp8_gemm.quant_fp8_per_token_ref(torch.randn(48, 64, generator=g))
    xs, ws = torch.tensor(0.02), torch.tensor([0.5])
    out = fp8_gemm.fp8_gemm_triton(xq, xs, wq, ws, torch.float16)
    torch.testing.assert_close(out, fp8_gemm.fp8_gemm_ref(xq, xs, wq, ws, torch.float16), **TOL[torch.float16])


@pytest.mark.parametrize("m", [2, 8])
def test_w4a16_planes_with_the_dispatched_config(m):
    # the tile configuration the CUDA dispatch uses for 2..8 rows at group sizes that are multiples of 128
    g = torch.Generator().manual_seed(m)
    n, k, group = 136, 512, 128
    q = torch.randint(-8, 8, (n, k), generator=g)
    scale = (torch.rand(n, k // group, generator=g) * 0.02 + 0.001).to(torch.bfloat16)
    x = torch.randn(m, k, generator=g).to(torch.bfloat16)
    packed = pack_rows_fast(q)
    out = w4a16_gemm.w4a16_gemm_planes_triton(x, packed, scale, group, config=w4a16_gemm.PLANES_CONFIG)
    torch.testing.assert_close(out, w4a16_gemm.w4a16_gemm_ref(x, packed, scale, group), **TOL[torch.bfloat16])


def _int4_case(g, m, n, k, group, asym, dtype=torch.bfloat16):
    q = torch.randint(-8, 8, (n, k), generator=g)
    scale = (torch.rand(n, k // group, generator=g) * 0.02 + 0.001).to(dtype)
    zp = None
    if asym:
        z = torch.randint(-8, 8, (n + (-n) % 8, k // group), generator=g)  # rows padded to whole words
        zp = pack_rows_fast(z.t().contiguous()).t().contiguous()
    return torch.randn(m, k, generator=g).to(dtype), pack_rows_fast(q), scale, zp


@pytest.mark.parametrize("name", ["fp8", "int8"])
def test_w8a8_split_k_above_decode_rows(name):
    # a config with split-K (its sixth field, waves) at a row count past the decode path's: several row tiles, each
    # output tile's splits summed by its last split with the bias added once; a second call on fresh inputs, then
    # no counter left raised
    from kvant.kernels.scaled_gemm import scaled_gemm_triton
    from kvant.kernels.splitk import _buffers

    mod = fp8_gemm if name == "fp8" else int8_gemm
    quant = getattr(mod, f"quant_{name}_per_token_ref")
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        xq, xs = quant(torch.randn(70, 512, generator=g))
        wq, ws = quant(torch.randn(96, 512, generator=g))
        bias = torch.randn(96, generator=g).to(torch.bfloat16)
        out = scaled_gemm_triton(xq, wq, xs.view(-1), ws.view(-1), torch.bfloat16, bias, config=(32, 32, 64, 4, 1, 2))
        torch.testing.assert_close(out, getattr(mod, f"{name}_gemm_ref")(xq, xs, wq, ws, torch.bfloat16, bias),
                                   **TOL[torch.bfloat16])
        assert all(int(cnt.abs().sum()) == 0 for _, cnt in _buffers[xq.device])


@pytest.mark.parametrize("kernel", ["w4a16_gemm_triton", "w4a16_gemm_planes_triton"])
def test_w4a16_split_k_reduces_in_kernel_and_resets(kernel):
    # many splits (small tiles, tiny interpreter SM count): the last split of each tile sums the partials and
    # zeroes its counter, so a second call on fresh inputs is right too and no counter is left raised
    from kvant.kernels.splitk import _buffers

    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        x, packed, scale, zp = _int4_case(g, 3, 40, 1024, 64, asym=seed == 2)
        out = getattr(w4a16_gemm, kernel)(x, packed, scale, 64, zp, config=(16, 32, 64, 4, 1, 8))
        torch.testing.assert_close(out, w4a16_gemm.w4a16_gemm_ref(x, packed, scale, 64, zp), **TOL[torch.bfloat16])
        assert all(int(cnt.abs().sum()) == 0 for _, cnt in _buffers[x.device])


@pytest.mark.parametrize("m,k,n", [(1, 1024, 2048), (3, 1024, 1024), (12, 3072, 1024)])
def test_w4a16_dispatch_on_qwen3_0_6b_shapes(m, k, n):
    # q_proj (1024 -> 2048), k/v_proj (1024 -> 1024), down_proj (3072 -> 1024) of Qwen3-0.6B, g128, through each
    # dispatched CUDA kernel family run here under the interpreter
    g = torch.Generator().manual_seed(m + k + n)
    x, packed, scale, zp = _int4_case(g, m, n, k, 128, asym=False)
    fn = {1: w4a16_gemm.w4a16_gemv_triton, 3: w4a16_gemm.w4a16_gemm_planes_triton, 12: w4a16_gemm.w4a16_gemm_triton}[m]
    torch.testing.assert_close(fn(x, packed, scale, 128, zp), w4a16_gemm.w4a16_gemm_ref(x, packed, scale, 128, zp),
                               **TOL[torch.bfloat16])


def test_w4a16_tune_never_picks_a_wrong_kernel(tmp_path, monkeypatch):
    # a candidate whose output strays from the reference is skipped before it is timed, however fast it would be
    from kvant.kernels import w4a16_tune

    monkeypatch.setenv("KVANT_HOME", str(tmp_path))
    monkeypatch.setattr(w4a16_tune, "_table", None)
    right = w4a16_tune.KERNELS["tile"]
    monkeypatch.setitem(w4a16_tune.KERNELS, "wrong", lambda *a, config=None: right(*a, config=config) * 1.1)
    monkeypatch.setattr(w4a16_tune, "candidates", lambda m, g: [("tile", (16, 64, 128, 4, 3, 1)),
                                                                 ("wrong", (16, 64, 128, 4, 3, 1))])
    x, packed, scale, _ = _int4_case(torch.Generator().manual_seed(22), 3, 48, 256, 128, asym=False)
    timed = []
    entry = w4a16_tune.tune(x, packed, scale, 128, timer=lambda fn: timed.append(fn) or 10.0 / len(timed))
    assert entry == ["tile", [16, 64, 128, 4, 3, 1]] and len(timed) == 1


def test_w4a16_tuned_table_persists_and_is_used(tmp_path, monkeypatch):
    # tune() keeps the fastest candidate on disk; a fresh process (table dropped from memory) reads it back, and
    # the chosen kernel still matches the reference on fresh inputs
    from kvant.kernels import w4a16_tune

    monkeypatch.setenv("KVANT_HOME", str(tmp_path))
    monkeypatch.setattr(w4a16_tune, "_table", None)
    g = torch.Generator().manual_seed(21)
    x, packed, scale, _ = _int4_case(g, 3, 48, 256, 128, asym=False)
    order = iter(range(1000, 0, -1))  # each candidate "times" faster than the one before: the last one wins
    entry = w4a16_tune.tune(x, packed, scale, 128, timer=lambda fn: next(order))
    assert entry == [w4a16_tune.candidates(3, 128)[-1][0],
                     list(w4a16_tune.candidates(3, 128)[-1][1])]
    monkeypatch.setattr(w4a16_tune, "_table", None)
    kernel, config = w4a16_tune.lookup(x, packed, 128, None)
    assert kernel is w4a16_tune.KERNELS[entry[0]] and list(config) == entry[1]
    x2, packed2, scale2, _ = _int4_case(g, 3, 48, 256, 128, asym=False)
    torch.testing.assert_close(kernel(x2, packed2, scale2, 128, None, config=config),
                               w4a16_gemm.w4a16_gemm_ref(x2, packed2, scale2, 128), **TOL[torch.bfloat16])
    assert w4a16_tune.lookup(x[:1], packed, 128, None) is None  # another row bucket was never tuned
