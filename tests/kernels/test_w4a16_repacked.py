"""The repacked W4A16 layout (made once at load) and the kernels that read it, against the checkpoint-layout torch
reference on fresh random inputs; Triton runs under the interpreter on CPU."""
import pytest
import torch

from kvant.kernels import w4a16_fast_gemv, w4a16_layout, w4a16_repacked, w4a16_swapab
from kvant.kernels.w4a16_gemm import dequant_w4_ref, w4a16_gemm_ref

from .naive import pack_rows, pack_rows_fast

TOL = {torch.bfloat16: dict(atol=2e-2, rtol=1.6e-2), torch.float16: dict(atol=2e-3, rtol=2e-3)}
interpreter_only = pytest.mark.skipif(torch.cuda.is_available(),
                                      reason="interpreter tests pass CPU tensors; test_gpu.py covers the GPU")


def _case(seed, m, n, k, group, asym, dtype=torch.bfloat16):
    # compressed-tensors tensors (checkpoint layout) and x
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-8, 8, (n, k), generator=g)
    scale = (torch.rand(n, k // group, generator=g) * 0.02 + 0.001).to(dtype)
    zp = None
    if asym:
        z = torch.randint(-8, 8, (n + (-n) % 8, k // group), generator=g)  # rows padded to whole words
        z[n:] = 0
        zp = pack_rows_fast(z.t().contiguous()).t().contiguous()
    return torch.randn(m, k, generator=g).to(dtype), pack_rows_fast(q), scale, zp


@pytest.mark.parametrize("n,k,group,asym", [(13, 64, 32, True), (40, 256, 128, False), (830, 544, 32, True)])
def test_repack_round_trips_exactly(n, k, group, asym):
    _, packed, scale, zp = _case(n + k, 1, n, k, group, asym)
    back = w4a16_layout.unrepack_w4(*w4a16_layout.repack_w4(packed, scale, group, zp))
    assert torch.equal(back[0], packed) and torch.equal(back[1], scale)
    assert (back[2] is None) if zp is None else torch.equal(back[2], zp)


def test_repacked_word_holds_pairs_of_consecutive_elements():
    # a hand-built word: element j = j (v = j - 8); repacked, bits 4i and 16 + 4i hold elements 2i and 2i + 1
    word = pack_rows(torch.arange(8).reshape(1, 8) - 8)
    qweight, _, _ = w4a16_layout.repack_w4(word, torch.ones(1, 1), 8)
    w = int(qweight) & 0xFFFFFFFF
    assert [(w >> (4 * i)) & 0xF for i in range(4)] == [0, 2, 4, 6]
    assert [(w >> (16 + 4 * i)) & 0xF for i in range(4)] == [1, 3, 5, 7]


@pytest.mark.parametrize("asym", [False, True])
def test_repacked_reference_dequantizes_as_the_checkpoint_reference(asym):
    _, packed, scale, zp = _case(5, 1, 24, 128, 32, asym)
    qweight, scales, zeros = w4a16_layout.repack_w4(packed, scale, 32, zp)
    assert torch.equal(w4a16_layout.dequant_w4_repacked_ref(qweight, scales, 32, zeros),
                       dequant_w4_ref(packed, scale, 32, zp))


@interpreter_only
# (130, 544, 32): N off every tile and off a packed zero-point word's 8 rows, K off BLOCK_K (the properties of the
# (830, 544) shape the tile tests use, at a sixth of the interpreter time)
@pytest.mark.parametrize("n,k,group", [(130, 544, 32), (72, 256, 64), (40, 1024, 128), (130, 512, 128)])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("waves,pairs", [(0, False), (4, False), (4, True), (0, True)])  # waves 4: K split
def test_fast_gemv(n, k, group, asym, waves, pairs):
    dtype = torch.bfloat16 if pairs == asym else torch.float16
    x, packed, scale, zp = _case(n + asym + 2 * pairs, 1, n, k, group, asym, dtype)
    ref = w4a16_gemm_ref(x, packed, scale, group, zp)
    out = w4a16_fast_gemv.w4a16_fast_gemv_triton(x, *_repacked(packed, scale, group, zp),
                                                 config=(16, 128, 4, 2, waves, pairs))
    torch.testing.assert_close(out, ref, **TOL[dtype])


def _repacked(packed, scale, group, zp):
    qweight, scales, zeros = w4a16_layout.repack_w4(packed, scale, group, zp)
    return qweight, scales, group, zeros


@interpreter_only
@pytest.mark.parametrize("m,n,k,group", [(5, 830, 544, 32), (16, 72, 256, 64), (33, 130, 256, 128),
                                         (70, 96, 544, 544)])
@pytest.mark.parametrize("asym", [False, True])
def test_swapab_tile(m, n, k, group, asym):
    dtype = torch.bfloat16 if m % 2 else torch.float16
    x, packed, scale, zp = _case(m * 10 + n + asym, m, n, k, group, asym, dtype)
    out = w4a16_swapab.w4a16_swapab_triton(x, *_repacked(packed, scale, group, zp))
    torch.testing.assert_close(out, w4a16_gemm_ref(x, packed, scale, group, zp), **TOL[dtype])


@interpreter_only
@pytest.mark.parametrize("kernel,m,n,k,group,config", [
    ("swapab", 70, 130, 256, 64, (128, 64, 64, 4, 3, 0, True)),  # weight tile scaled in 16 bits, MMAs chained
    ("swapab", 150, 96, 544, 32, (64, 64, 32, 4, 3, 8, True)),  # three token tiles, split K (in-kernel reduction)
    ("swapab", 40, 72, 256, 128, (64, 64, 64, 4, 3, 0, False)),  # fp32 partials scaled, the config given in full
    ("wide", 33, 130, 256, 128, None),  # N off the 128-column tile, M off the 64-row tile
    ("wide", 70, 96, 544, 32, (64, 64, 32, 4, 1, 1, False)),  # two M tiles, K off any power-of-two tile, fp32 partials
    ("wide", 16, 72, 256, 64, (16, 32, 64, 4, 1, 8, True)),  # split K (in-kernel reduction)
    ("wide", 20, 72, 256, 64, (32, 32, 64, 4, 1, 8, False))])
@pytest.mark.parametrize("asym", [False, True])
def test_tile_configs(kernel, m, n, k, group, config, asym):
    dtype = torch.bfloat16 if (m + asym) % 2 else torch.float16
    x, packed, scale, zp = _case(m * 10 + n + asym, m, n, k, group, asym, dtype)
    fn = w4a16_swapab.w4a16_swapab_triton if kernel == "swapab" else w4a16_swapab.w4a16_wide_triton
    out = fn(x, *_repacked(packed, scale, group, zp), config=config)
    torch.testing.assert_close(out, w4a16_gemm_ref(x, packed, scale, group, zp), **TOL[dtype])


@interpreter_only
def test_swapab_split_k_reduces_in_kernel_and_resets():
    from kvant.kernels.splitk import _buffers

    for seed in (1, 2):
        x, packed, scale, zp = _case(seed, 7, 40, 1024, 64, asym=seed == 2)
        out = w4a16_swapab.w4a16_swapab_triton(x, *_repacked(packed, scale, 64, zp), config=(16, 32, 64, 4, 1, 8))
        torch.testing.assert_close(out, w4a16_gemm_ref(x, packed, scale, 64, zp), **TOL[torch.bfloat16])
        assert all(int(cnt.abs().sum()) == 0 for _, cnt in _buffers[x.device])


@interpreter_only
@pytest.mark.parametrize("asym", [False, True])
def test_dequant_kernel_is_exact_in_fp32(asym):
    _, packed, scale, zp = _case(9 + asym, 1, 40, 256, 64, asym)
    out = w4a16_swapab.dequant_repacked_triton(*_repacked(packed, scale, 64, zp), torch.float32)
    assert torch.equal(out, dequant_w4_ref(packed, scale, 64, zp))


@interpreter_only
@pytest.mark.parametrize("m,dtype", [(300, torch.bfloat16), (257, torch.float16)])
def test_dequant_mm_for_prefill(m, dtype):
    x, packed, scale, zp = _case(m, m, 48, 256, 128, True, dtype)
    ref = w4a16_gemm_ref(x, packed, scale, 128, zp)
    out = w4a16_swapab.w4a16_repacked_dequant_mm(x, *_repacked(packed, scale, 128, zp))
    tol = dict(TOL[dtype], atol=max(TOL[dtype]["atol"], 1e-2 * ref.abs().max().item()))  # weight rounded to 16 bits
    torch.testing.assert_close(out, ref, **tol)


@interpreter_only
@pytest.mark.parametrize("m,k,n", [(1, 1024, 2048), (4, 1024, 1024), (12, 3072, 1024), (130, 1024, 1024)])
def test_dispatch_on_qwen3_0_6b_shapes(m, k, n, monkeypatch):
    # q_proj, k/v_proj, down_proj of Qwen3-0.6B at g128 through the kernel the CUDA dispatch picks for m rows
    monkeypatch.setattr(w4a16_repacked, "on_cuda", lambda *t: True)
    x, packed, scale, zp = _case(m + k + n, m, n, k, 128, asym=m == 4)
    out = w4a16_repacked.w4a16_repacked_gemm(x, *_repacked(packed, scale, 128, zp))
    torch.testing.assert_close(out, w4a16_gemm_ref(x, packed, scale, 128, zp), **TOL[torch.bfloat16])


def test_bad_operands_are_named():
    x = torch.zeros(1, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="scales"):
        w4a16_repacked.w4a16_repacked_gemm(x, torch.zeros(8, 8, dtype=torch.int32), torch.ones(8, 2), 32)
    with pytest.raises(ValueError, match="x must be"):
        w4a16_fast_gemv.w4a16_fast_gemv_triton(x.float(), torch.zeros(8, 8, dtype=torch.int32), torch.ones(2, 8), 32)
    with pytest.raises(ValueError, match="one row"):
        w4a16_fast_gemv.w4a16_fast_gemv_triton(x.expand(2, 64), torch.zeros(8, 8, dtype=torch.int32), torch.ones(2, 8), 32)


@interpreter_only
def test_tuned_table_picks_a_repacked_kernel_and_the_dispatch_uses_it(tmp_path, monkeypatch):
    # tune(repacked=True) keeps the fastest repacked candidate on disk; a fresh process reads it back and the
    # dispatch runs that kernel and config, which still matches the reference on fresh inputs
    from kvant.kernels import w4a16_tune

    monkeypatch.setenv("KVANT_HOME", str(tmp_path))
    monkeypatch.setattr(w4a16_tune, "_table", None)
    monkeypatch.setattr(w4a16_repacked, "on_cuda", lambda *t: True)
    x, packed, scale, zp = _case(31, 1, 48, 256, 64, asym=True)
    qweight, scales, _, zeros = _repacked(packed, scale, 64, zp)
    fast_gemv = [c for c in w4a16_tune.repacked_candidates(1, 64) if c[0] == "fast_gemv"]
    chosen = fast_gemv[3]
    entry = w4a16_tune.tune(x, qweight, scales, 64, zeros, repacked=True,
                            timer=lambda fn: 0.0 if fn.__defaults__[-1] == chosen[1] else 1.0)
    assert entry == ["fast_gemv", list(chosen[1])]
    monkeypatch.setattr(w4a16_tune, "_table", None)
    calls = []
    monkeypatch.setitem(w4a16_tune.KERNELS, "fast_gemv",
                        lambda *a, config: calls.append(config) or w4a16_fast_gemv.w4a16_fast_gemv_triton(*a, config=config))
    x2, packed2, scale2, zp2 = _case(32, 1, 48, 256, 64, asym=True)
    out = w4a16_repacked.w4a16_repacked_gemm(x2, *_repacked(packed2, scale2, 64, zp2))
    assert calls == [tuple(chosen[1])]
    torch.testing.assert_close(out, w4a16_gemm_ref(x2, packed2, scale2, 64, zp2), **TOL[torch.bfloat16])
    assert w4a16_tune.lookup(x2, qweight, 64, zeros) is None  # the checkpoint layout's entries are apart


def test_static_dispatch_by_rows_on_llama_shapes(tmp_path, monkeypatch):
    # with no tuned table: the tensor-core GEMV at 1-64 rows on every Llama-3.1-8B shape and at 65-256 on all but
    # gate_up (the wide tile there), as the H100 sweeps measured; its config follows the row count; SiLU·mul is fused
    # into down_proj only at decode rows (meta tensors: only shapes are read)
    from kvant.kernels import w4a16_mma_gemv, w4a16_tune

    monkeypatch.setenv("KVANT_HOME", str(tmp_path))
    monkeypatch.setattr(w4a16_tune, "_table", None)
    shapes = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}

    def pick_with_config(m, name):
        k, n = shapes[name]
        x = torch.empty(m, k, dtype=torch.bfloat16, device="meta")
        qweight = torch.empty(n, k // 8, dtype=torch.int32, device="meta")
        return w4a16_repacked._pick(x, qweight, None, 128, None)

    def pick(m, name):
        return pick_with_config(m, name)[0]

    gemv, wide = w4a16_mma_gemv.w4a16_mma_gemv_triton, w4a16_swapab.w4a16_wide_triton
    assert all(pick(m, s) is gemv for m in (1, 4, 16, 33, 64) for s in shapes)
    assert [pick(100, s) for s in shapes] == [gemv, gemv, wide, gemv]
    assert [pick(256, s) for s in shapes] == [gemv, gemv, wide, gemv]
    assert pick(257, "qkv") is w4a16_swapab.w4a16_repacked_dequant_mm  # prefill chunks
    # where the async-wgmma tiles can run (an sm_90 GPU with Gluon; said yes to here), they take gate_up at 65-256
    # rows once turned on (KVANT_WGMMA=1, read at import; off by default until an engine A/B shows it pays): the
    # single-partition tile in 128-token tiles to 128 rows, the warp-specialized one in 256-token tiles beyond, or the
    # single-partition tile there where warp specialization is missing
    from kvant.kernels import w4a16_wgmma, w4a16_wgmma_ws

    monkeypatch.setattr(w4a16_wgmma, "supported", lambda *a: True)
    monkeypatch.setattr(w4a16_wgmma_ws, "supported", lambda *a: True)
    assert pick(200, "gate_up") is wide  # off by default
    monkeypatch.setattr(w4a16_repacked, "WGMMA", True)
    full = [pick_with_config(m, "gate_up") for m in (64, 65, 128, 129, 256, 257)]
    assert full[0][0] is gemv and full[5][0] is w4a16_swapab.w4a16_repacked_dequant_mm
    one, ws = w4a16_wgmma.w4a16_wgmma, w4a16_wgmma_ws.w4a16_wgmma_ws
    assert [f[0] for f in full[1:5]] == [one, one, ws, ws]
    assert [f[1][-1] for f in full[1:5]] == [128, 128, 256, 256]  # the token tile, last in the configs picked here
    assert [pick(200, s) for s in shapes] == [gemv, gemv, ws, gemv]
    monkeypatch.setattr(w4a16_wgmma_ws, "supported", lambda *a: False)
    assert pick_with_config(200, "gate_up") == (one, (128, 8, 3, 1, 256))
    assert w4a16_mma_gemv.default_config(1, 6144) == (64, 4, 1, 4, True, True)  # pairs of blocks
    assert w4a16_mma_gemv.default_config(64, 28672)[0] == 256 and w4a16_mma_gemv.default_config(64, 6144)[0] == 64
    assert w4a16_mma_gemv.default_config(100, 4096) == w4a16_mma_gemv.default_config(256, 4096) == (
        128, 8, 3, 1, False, False, True, 64)  # 64-token tiles, blocks scaled in 16 bits


@interpreter_only
def test_silu_mul_is_fused_into_the_gemv_only_at_decode_rows(monkeypatch):
    # fused, every column tile recomputes SiLU·mul over all of x: worth it at a few rows, not at a busy step's
    from kvant.kernels.activation import silu_and_mul_ref

    monkeypatch.setattr(w4a16_repacked, "on_cuda", lambda *t: True)
    separate = []
    monkeypatch.setattr(w4a16_repacked, "silu_and_mul", lambda g: separate.append(g.shape[0]) or silu_and_mul_ref(g))
    for m in (2, 8):
        x, packed, scale, zp = _case(m, m, 64, 256, 128, asym=False)
        gate_up = torch.cat([x, x.flip(1)], dim=1)
        out = w4a16_repacked.w4a16_repacked_silu_mul_gemm(gate_up, *_repacked(packed, scale, 128, zp))
        torch.testing.assert_close(out, w4a16_gemm_ref(silu_and_mul_ref(gate_up), packed, scale, 128, zp),
                                   **TOL[torch.bfloat16])
    assert separate == [8]
