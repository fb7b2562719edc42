"""The dispatching entry points on a real GPU (compiled Triton, cuBLASLt paths) at model-sized shapes."""
import pytest
import torch

from kvant.kernels import fp8_gemm, int8_gemm, paged_attention, w4a16_gemm
from kvant.kernels.int4_pack import pack_int4

pytestmark = pytest.mark.gpu
FP8 = torch.float8_e4m3fn


def replay_twice(call, inputs: torch.Tensor, check) -> None:
    """`call()` once outside a graph (compile, size the split-K buffers), then captured in a CUDA graph and replayed
    twice, each time on fresh random `inputs` into an output poisoned with NaN, which `check` is given."""
    call()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    for _ in range(2):
        inputs.copy_(torch.randn_like(inputs))
        out.fill_(float("nan"))
        graph.replay()
        check(out)


def _int4_case(n, k, group, asym, dtype=torch.bfloat16, scale_dtype=None):
    # compressed-tensors INT4 tensors, kvant's repacked ones, and the 16-bit-rounded dequantized weight (what a kernel
    # that scales the weight in 16 bits multiplies by); scales (and zeros) in scale_dtype, by default dtype
    from kvant.kernels.w4a16_layout import repack_w4

    q = torch.randint(-8, 8, (n, k), device="cuda", dtype=torch.int8)
    scale = (torch.rand(n, k // group, device="cuda") * 0.01 + 1e-3).to(scale_dtype or dtype)
    zp = pack_int4(torch.randint(-8, 8, (k // group, n), device="cuda", dtype=torch.int8)).t().contiguous() \
        if asym else None
    packed = pack_int4(q)
    # the kernels round a wider scale to 16 bits before scaling (SCALE_IN's arithmetic): each weight is the 16-bit
    # rounding of (code - zero) times the 16-bit scale
    w16 = w4a16_gemm.dequant_w4_ref(packed, scale.to(dtype), group, zp).to(dtype).float()
    return packed, scale, zp, repack_w4(packed, scale, group, zp), w16


@pytest.mark.parametrize("m", [1, 16, 300])
def test_w4a16_dispatch(m):
    n, k, g = 2048, 4096, 128
    q = torch.randint(-8, 8, (n, k), device="cuda", dtype=torch.int8)
    scale = (torch.rand(n, k // g, device="cuda") * 0.01).to(torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    out = w4a16_gemm.w4a16_gemm(x, pack_int4(q), scale, g)
    torch.testing.assert_close(out, w4a16_gemm.w4a16_gemm_ref(x, pack_int4(q), scale, g), atol=3e-2, rtol=2e-2)


@pytest.mark.parametrize("m", [1, 3, 12, 64, 100])
@pytest.mark.parametrize("group,asym", [(32, True), (64, False), (128, True)])
@pytest.mark.parametrize("k,n", [(1024, 2048), (3072, 1024), (1024, 6152)])  # Qwen3-0.6B q, down; N % 128 != 0
def test_w4a16_families_in_a_cuda_graph(m, group, asym, k, n):
    # each dispatched family (GEMV, planes, split-K tile) replayed twice from a CUDA graph on fresh inputs: the
    # in-kernel split-K reduction resets its counters, so every replay is right
    packed, scale, zp, _, _ = _int4_case(n, k, group, asym)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    replay_twice(lambda: w4a16_gemm.w4a16_gemm(x, packed, scale, group, zp), x,
                 lambda out: torch.testing.assert_close(out, w4a16_gemm.w4a16_gemm_ref(x, packed, scale, group, zp),
                                                        atol=3e-2, rtol=2e-2))


@pytest.mark.parametrize("name", ["fp8", "int8"])
def test_w8a8_dispatch(name):
    mod = fp8_gemm if name == "fp8" else int8_gemm
    x, w = torch.randn(512, 1024, device="cuda", dtype=torch.bfloat16), torch.randn(768, 1024, device="cuda")
    xq, xs = getattr(mod, f"quant_{name}_per_token")(x)
    xq_ref, xs_ref = getattr(mod, f"quant_{name}_per_token_ref")(x)
    torch.testing.assert_close(xs, xs_ref, atol=0, rtol=1e-6)
    # GPU fp32 division may differ from torch's in the last bit, which can move a value to the next code
    assert (xq.float() != xq_ref.float()).float().mean() < 1e-3
    wq, ws = getattr(mod, f"quant_{name}_per_token_ref")(w)
    bias = torch.randn(768, device="cuda", dtype=torch.bfloat16)
    out = getattr(mod, f"{name}_gemm")(xq, xs, wq, ws, torch.bfloat16, bias)
    ref = getattr(mod, f"{name}_gemm_ref")(xq, xs, wq, ws, torch.bfloat16, bias)
    torch.testing.assert_close(out, ref, atol=3e-2, rtol=2e-2)


@pytest.mark.parametrize("cache", [torch.bfloat16, FP8])
def test_decode_dispatch_long_context(cache):
    b, hq, hkv, d, bs, ctx = 4, 32, 8, 128, 16, 5000
    nb = b * (ctx // bs + 1)
    kc = torch.randn(nb, bs, hkv, d, device="cuda")
    vc = torch.randn(nb, bs, hkv, d, device="cuda")
    scale = 0.02 if cache == FP8 else None
    kc, vc = ((kc * 50).to(cache), (vc * 50).to(cache)) if cache == FP8 else (kc.to(cache), vc.to(cache))
    tables = torch.randperm(nb, device="cuda").to(torch.int32).reshape(b, -1)
    lens = torch.tensor([ctx, 1, 333, 4097], device="cuda", dtype=torch.int32)
    q = torch.randn(b, hq, d, device="cuda", dtype=torch.bfloat16)
    args = (q, kc, vc, tables, lens, d**-0.5, scale, scale)
    torch.testing.assert_close(paged_attention.paged_attention_decode(*args),
                               paged_attention.paged_attention_decode_ref(*args), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("b", [1, 64])
@pytest.mark.parametrize("hq,hkv,qk_norm", [(32, 8, False), (16, 8, True)])  # Llama-3.1-8B, Qwen3-0.6B
@pytest.mark.parametrize("cache", [torch.bfloat16, FP8])
def test_rope_store_decode_in_a_cuda_graph(b, hq, hkv, qk_norm, cache):
    # the fused decode attention (RoPE, the new token's KV store, split-KV with the in-kernel merge) replayed from a
    # CUDA graph with a max_model_len-wide table, twice: its merge counters reset, and each replay stores its token
    d, bs, width = 128, 16, 512
    g = torch.Generator(device="cuda").manual_seed(b + hq)
    nb = b * width
    scale = 0.02 if cache == FP8 else None
    kc, vc = (torch.randn(nb, bs, hkv, d, device="cuda", generator=g) for _ in range(2))
    kc, vc = ((kc * 50).to(cache), (vc * 50).to(cache)) if cache == FP8 else (kc.to(cache), vc.to(cache))
    tables = torch.randperm(nb, device="cuda", generator=g).to(torch.int32).reshape(b, width)
    lens = torch.randint(1, 3000, (b,), device="cuda", generator=g).to(torch.int32)
    lens[0] = 200
    pos = (lens - 1).long()
    slots = tables.gather(1, (pos // bs)[:, None]).squeeze(1).long() * bs + pos % bs
    qkv = torch.randn(b, (hq + 2 * hkv) * d, device="cuda", dtype=torch.bfloat16, generator=g)
    q, k, v = (x.view(b, -1, d) for x in qkv.split([hq * d, hkv * d, hkv * d], dim=-1))
    freqs = torch.arange(4096.0, device="cuda")[:, None] * (5e5 ** (-torch.arange(0, d, 2, device="cuda") / d))
    cs = torch.cat([freqs.cos(), freqs.sin()], dim=-1)
    norm = dict(q_norm_weight=torch.rand(d, device="cuda").to(torch.bfloat16) + 0.5,
                k_norm_weight=torch.rand(d, device="cuda").to(torch.bfloat16) + 0.5, eps=1e-6) if qk_norm else {}
    args = (q, k, v, pos, cs, kc, vc, slots, tables, lens, d**-0.5, scale, scale)

    def check(out):
        ref_k, ref_v = kc.clone(), vc.clone()
        want = paged_attention.rope_store_decode_ref(q, k, v, pos, cs, ref_k, ref_v, slots, tables, lens, d**-0.5,
                                                     scale, scale, **norm)
        torch.testing.assert_close(out, want, atol=2e-2, rtol=2e-2)
        # this replay's tokens were stored: v as is, k rotated (fused multiply-adds may move a rounding by a step)
        k_tol = dict(atol=1 / 16, rtol=0.13) if cache == FP8 else dict(atol=1e-2, rtol=1.6e-2)
        torch.testing.assert_close(kc.float(), ref_k.float(), **k_tol)
        torch.testing.assert_close(vc.float(), ref_v.float(), atol=0, rtol=0)

    replay_twice(lambda: paged_attention.rope_store_decode(*args, **norm), qkv, check)


@pytest.mark.parametrize("m", [1, 3, 12, 64, 100, 200, 300])
@pytest.mark.parametrize("group,asym", [(32, True), (64, False), (128, True)])
@pytest.mark.parametrize("k,n", [(1024, 2048), (3072, 1024), (1024, 6152)])  # Qwen3-0.6B q, down; N % 128 != 0
def test_w4a16_repacked_families_in_a_cuda_graph(m, group, asym, k, n, dtype=torch.bfloat16):
    # the repacked layout's GEMV (1..4 rows), swap-AB tile (to 64 rows for these small weights), wide tile (65..128)
    # and dequant + GEMM, each compiled and replayed twice from a CUDA graph on fresh inputs, against the
    # checkpoint-layout torch reference
    from kvant.kernels.w4a16_repacked import w4a16_repacked_gemm

    packed, scale, zp, (qweight, scales, zeros), _ = _int4_case(n, k, group, asym, dtype)
    x = torch.randn(m, k, device="cuda", dtype=dtype)

    def check(out):
        ref = w4a16_gemm.w4a16_gemm_ref(x, packed, scale, group, zp)
        # past the swap-AB tile, the wide tile (scaled in 16 bits) and dequantize + GEMM round the weight to 16 bits
        atol = 3e-2 if m <= 64 else max(3e-2, 1e-2 * ref.abs().max().item())
        torch.testing.assert_close(out, ref, atol=atol, rtol=2e-2)

    replay_twice(lambda: w4a16_repacked_gemm(x, qweight, scales, group, zeros), x, check)


@pytest.mark.parametrize("m", [1, 12, 300])
def test_w4a16_repacked_families_in_fp16(m):
    test_w4a16_repacked_families_in_a_cuda_graph(m, 128, True, 1024, 2048, dtype=torch.float16)


@pytest.mark.parametrize("pairs", [False, True])
@pytest.mark.parametrize("group,asym", [(32, True), (128, False), (128, True)])
@pytest.mark.parametrize("k,n", [(1024, 2048), (3072, 1024), (1024, 6152)])
def test_w4a16_repacked_gemv_compiled(pairs, group, asym, k, n):
    # the one-row GEMV (off the dispatch until measured faster than swap-AB) in both of its forms
    from kvant.kernels.w4a16_fast_gemv import FAST_GEMV_CONFIG, w4a16_fast_gemv_triton

    packed, scale, zp, (qweight, scales, zeros), _ = _int4_case(n, k, group, asym)
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    out = w4a16_fast_gemv_triton(x, qweight, scales, group, zeros, config=FAST_GEMV_CONFIG[:5] + (pairs,))
    torch.testing.assert_close(out, w4a16_gemm.w4a16_gemm_ref(x, packed, scale, group, zp), atol=3e-2, rtol=2e-2)


@pytest.mark.parametrize("m", [1, 2, 4, 40, 100, 200])
@pytest.mark.parametrize("k,n", [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096)])  # Llama-3.1-8B merged
def test_w4a16_mma_gemv_llama_shapes(m, k, n):
    # the tensor-core GEMV for 1..256 rows (the dispatch's pick at 1-64 rows, g64 and up), g128, every config the
    # tuner may pick (64, 128 and 256 token columns at 40, 100 and 200 rows, the block scaled in 16 bits among them),
    # asymmetric at 2 and 200 rows
    from kvant.kernels.w4a16_mma_gemv import w4a16_mma_gemv_triton
    from kvant.kernels.w4a16_tune import repacked_candidates

    group, asym = 128, m in (2, 200)
    packed, scale, zp, (qweight, scales, zeros), w16 = _int4_case(n, k, group, asym)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    ref = w4a16_gemm.w4a16_gemm_ref(x, packed, scale, group, zp)
    # SCALE_IN (a config's seventh field) rounds each scaled weight to bf16 once, as a dequantizing GEMM does: its
    # reference is the product with those weights (at K = 14336 the exact one differs by up to ~0.04 in a few places)
    ref16 = (x.float() @ w16.t()).to(x.dtype)
    for kernel, config in repacked_candidates(m, group):
        if kernel == "mma_gemv":
            out = w4a16_mma_gemv_triton(x, qweight, scales, group, zeros, config=config)
            want = ref16 if len(config) > 6 and config[6] else ref
            torch.testing.assert_close(out, want, atol=3e-2, rtol=2e-2, msg=lambda e, c=config: f"{c}: {e}")


# the Gluon wgmma tiles (sm_90): the single-partition one, and the warp-specialized one (its dequantizing warpgroup
# beside the MMA warpgroups); configs for the off-tile CUDA-graph test (split-K on, and in the warp-specialized one
# splits of fewer K steps than its rings hold; the single-partition tile's register forms over splits of odd and even
# step counts, their loops taking steps in pairs)
WGMMA_TILES = {"w4a16_wgmma": ((128, 8, 4, 4, 64), (64, 4, 3, 1, 128), (64, 4, 3, 4, 128, True), (64, 4, 4, 4, 64, 2)),
               "w4a16_wgmma_ws": ((128, 8, 4, 2, 4, 64), (64, 4, 3, 2, 1, 128), (128, 8, 3, 3, 8, 256))}


def _wgmma_tile(name):
    # (module, entry point), skipping where the tile cannot run
    import importlib

    mod = importlib.import_module(f"kvant.kernels.{name}")
    if not mod.HAVE_GLUON or torch.cuda.get_device_capability() != (9, 0):
        pytest.skip(f"{name} needs Gluon (with warp specialization for the _ws tile) and an sm_90 GPU")
    return mod, getattr(mod, name)


@pytest.mark.parametrize("tile", list(WGMMA_TILES))
@pytest.mark.parametrize("m", [1, 16, 40, 64, 100, 200, 256])
@pytest.mark.parametrize("k,n", [(4096, 6144), (14336, 4096), (4096, 28672)])
def test_w4a16_wgmma_llama_shapes(m, k, n, tile):
    # every config a wgmma tile offers, on Llama-3.1-8B's qkv, down and gate_up, g128, asymmetric at 40 and 200 rows,
    # fp32 scales (the engine's, from its random-weight quantization) at 100, 200 and 256; against the product with
    # the bf16-rounded weights (the kernels scale in 16 bits)
    mod, fn = _wgmma_tile(tile)
    group, asym = 128, m in (40, 200)
    sdt = torch.float32 if m in (100, 200, 256) else None
    _, _, _, (qweight, scales, zeros), w16 = _int4_case(n, k, group, asym, scale_dtype=sdt)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    assert scales.dtype == (sdt or torch.bfloat16) and mod.supported(x, qweight, scales, group, zeros)
    ref16 = (x.float() @ w16.t()).to(x.dtype)
    for config in mod.CONFIGS:
        out = fn(x, qweight, scales, group, zeros, config=config)
        torch.testing.assert_close(out, ref16, atol=3e-2, rtol=2e-2, msg=lambda e, c=config: f"{c}: {e}")


@pytest.mark.parametrize("tile", list(WGMMA_TILES))
@pytest.mark.parametrize("group,asym,dtype", [(64, True, torch.float16), (128, False, torch.bfloat16),
                                              (256, True, torch.bfloat16)])
@pytest.mark.parametrize("m", [1, 33, 130])
def test_w4a16_wgmma_off_the_tiles_in_a_cuda_graph(group, asym, dtype, m, tile):
    # N and K off the tiles (N = 1048: not a multiple of 64 or 128; K = 1536 + 256 = 1792: 28 K steps, split-K on),
    # replayed twice from a CUDA graph on fresh inputs into NaN-poisoned outputs: the split-K counters reset and the
    # padded tokens and rows stay out of the output
    mod, fn = _wgmma_tile(tile)
    k, n = 1792, 1048
    _, _, _, (qweight, scales, zeros), w16 = _int4_case(n, k, group, asym, dtype)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    # the loader form (sixth field 2) only where Gluon has warp specialization, as CONFIGS offers it
    for config in [c for c in WGMMA_TILES[tile] if c[5:] != (2,) or getattr(mod, "HAVE_WS", True)]:
        replay_twice(lambda c=config: fn(x, qweight, scales, group, zeros, config=c), x,
                     lambda out: torch.testing.assert_close(out, (x.float() @ w16.t()).to(dtype), atol=3e-2,
                                                            rtol=2e-2))


@pytest.mark.parametrize("group,asym,dtype", [(32, True, torch.float16), (64, False, torch.bfloat16),
                                              (128, True, torch.bfloat16)])
@pytest.mark.parametrize("m", [1, 3, 16])
def test_w4a16_mma_gemv_in_a_cuda_graph(group, asym, dtype, m):
    # Qwen3-0.6B's k/v_proj widened off the tiles (N % 64 != 0), replayed twice from a CUDA graph on fresh inputs: the
    # split-K counters reset, and the padded tokens and rows stay out of the output
    from kvant.kernels.w4a16_mma_gemv import MMA_GEMV_CONFIG, w4a16_mma_gemv_triton

    k, n = 1024, 1048
    packed, scale, zp, (qweight, scales, zeros), _ = _int4_case(n, k, group, asym, dtype)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    for config in (MMA_GEMV_CONFIG, (64, 4, 1, 8, True)):
        replay_twice(lambda c=config: w4a16_mma_gemv_triton(x, qweight, scales, group, zeros, config=c), x,
                     lambda out: torch.testing.assert_close(out, w4a16_gemm.w4a16_gemm_ref(x, packed, scale, group, zp),
                                                            atol=3e-2, rtol=2e-2))


@pytest.mark.parametrize("m", [1, 4, 64])
@pytest.mark.parametrize("asym", [False, True])
def test_w4a16_down_proj_with_silu_mul_fused_in_a_cuda_graph(m, asym):
    # Llama-3.1-8B's down_proj fed gate_up: the dispatch fuses SiLU·mul into the tensor-core GEMV where it picks it (1
    # and 4 rows) and runs the activation kernel first elsewhere; replayed twice from a CUDA graph on fresh inputs, it
    # equals SiLU·mul then the GEMM bit for bit
    from kvant.kernels.activation import silu_and_mul_triton
    from kvant.kernels.w4a16_repacked import w4a16_repacked_gemm, w4a16_repacked_silu_mul_gemm

    k, n, group = 14336, 4096, 128
    _, _, _, (qweight, scales, zeros), _ = _int4_case(n, k, group, asym)
    gate_up = torch.randn(m, 2 * k, device="cuda", dtype=torch.bfloat16) * 2
    replay_twice(lambda: w4a16_repacked_silu_mul_gemm(gate_up, qweight, scales, group, zeros), gate_up,
                 lambda out: torch.testing.assert_close(
                     out, w4a16_repacked_gemm(silu_and_mul_triton(gate_up), qweight, scales, group, zeros),
                     atol=0, rtol=0))


@pytest.mark.parametrize("m", [1, 48])
@pytest.mark.parametrize("k,n,bias", [(14336, 4096, False), (1024, 1000, True)])
def test_skinny_gemm_every_candidate_in_a_cuda_graph(m, k, n, bias):
    # every config the start-up measurement may pick, compiled, replayed twice from a CUDA graph on fresh inputs
    from kvant.kernels import skinny_gemm

    w = (torch.randn(n, k, device="cuda") / k**0.5).to(torch.bfloat16)
    b = torch.randn(n, device="cuda", dtype=torch.bfloat16) if bias else None
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    for config in skinny_gemm.candidates(m):
        replay_twice(lambda c=config: skinny_gemm.skinny_gemm_triton(x, w, b, c), x,
                     lambda out: torch.testing.assert_close(out.float(), skinny_gemm.skinny_gemm_ref(x, w, b).float(),
                                                            atol=2e-2, rtol=2e-2))


@pytest.mark.parametrize("m", [1, 4, 16])
@pytest.mark.parametrize("k,n,bias", [(4096, 6144, False), (14336, 4096, False), (1000, 1000, True)])
@pytest.mark.parametrize("wdtype", [torch.float8_e4m3fn, torch.int8])
def test_skinny_gemm_8bit_weight_every_candidate_in_a_cuda_graph(m, k, n, bias, wdtype):
    # the weight-only W8A16 decode GEMM (FP8 / INT8 weight, per-row scale), every start-up candidate, replayed twice
    # from a CUDA graph on fresh inputs, against its reference and against the W8A16 GEMM it replaces
    from kvant.kernels import skinny_gemm
    from kvant.kernels.w8a16_gemm import w8a16_gemm_triton

    w = (torch.randn(n, k, device="cuda") * 20).clamp(-127, 127)
    w = w.round().to(torch.int8) if wdtype == torch.int8 else w.to(wdtype)
    scale = torch.rand(n, device="cuda") / (20 * k**0.5) + 1e-4
    b = torch.randn(n, device="cuda", dtype=torch.bfloat16) if bias else None
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    for config in skinny_gemm.candidates(m, w_bytes=1):
        def check(out, config=config):
            want = skinny_gemm.skinny_gemm_ref(x, w, b, scale=scale).float()
            torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=2e-2, msg=lambda e: f"{config}: {e}")
            plain = w8a16_gemm_triton(x, w, scale).float() + (b.float() if bias else 0)
            torch.testing.assert_close(out.float(), plain, atol=3e-2, rtol=3e-2)

        replay_twice(lambda c=config: skinny_gemm.skinny_gemm_triton(x, w, b, c, scale=scale), x, check)


@pytest.mark.parametrize("m", [1, 48])
@pytest.mark.parametrize("k,n,bias", [(14336, 4096, False), (1000, 1000, True)])
def test_skinny_gemm_silu_mul_every_candidate_in_a_cuda_graph(m, k, n, bias):
    # as above with SiLU·mul fused into the x load: x is down_proj's gate_up [m, 2K] (Llama-3.1-8B, and K, N off the
    # tiles)
    from kvant.kernels import skinny_gemm

    w = (torch.randn(n, k, device="cuda") / k**0.5).to(torch.bfloat16)
    b = torch.randn(n, device="cuda", dtype=torch.bfloat16) if bias else None
    gate_up = torch.randn(m, 2 * k, device="cuda", dtype=torch.bfloat16)
    for config in skinny_gemm.candidates(m, silu_mul=True):
        replay_twice(lambda c=config: skinny_gemm.skinny_gemm_triton(gate_up, w, b, c, silu_mul=True), gate_up,
                     lambda out: torch.testing.assert_close(
                         out.float(), skinny_gemm.skinny_gemm_ref(gate_up, w, b, silu_mul=True).float(), atol=2e-2,
                         rtol=2e-2))


@pytest.mark.parametrize("m", [1, 48])
def test_skinny_gemm_silu_mul_activations_equal_the_triton_kernel(m):
    # w = I: each output is the activation itself, which must be the unfused SiLU·mul kernel's value bit for bit
    from kvant.kernels import skinny_gemm
    from kvant.kernels.activation import silu_and_mul_triton

    k = 1000
    gate_up = 3 * torch.randn(m, 2 * k, device="cuda", dtype=torch.bfloat16)
    eye = torch.eye(k, device="cuda", dtype=torch.bfloat16)
    for config in skinny_gemm.candidates(m, silu_mul=True):
        got = skinny_gemm.skinny_gemm_triton(gate_up, eye, None, config, silu_mul=True)
        assert torch.equal(got, silu_and_mul_triton(gate_up)), config


@pytest.mark.parametrize("qdtype", [torch.float8_e4m3fn, torch.int8])
@pytest.mark.parametrize("m", [1, 64, 256])
def test_fused_activation_quant_equals_the_unfused_kernels(qdtype, m):
    # RMSNorm (+ residual) and SiLU·mul writing their output quantised per token, compiled for this card, at
    # Llama-3.1-8B widths: bit for bit the separate kernels' result (kvant.kernels.quant_rows)
    from kvant.kernels import quant_rows
    from kvant.kernels.activation import silu_and_mul_triton
    from kvant.kernels.rmsnorm import rms_norm_triton

    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16) * 3
    r = torch.randn_like(x)
    w = torch.rand(4096, device="cuda", dtype=torch.bfloat16) + 0.5
    q, s, summed = quant_rows.rms_norm_quant_triton(x, w, 1e-5, r, qdtype)
    y, want_sum = rms_norm_triton(x, w, 1e-5, r)
    wq, ws = quant_rows.quant_rows_triton(y, qdtype)
    assert torch.equal(q.view(torch.uint8), wq.view(torch.uint8)) and torch.equal(s, ws)
    assert torch.equal(summed, want_sum)
    gate_up = torch.randn(m, 2 * 14336, device="cuda", dtype=torch.bfloat16) * 2
    q, s = quant_rows.silu_and_mul_quant_triton(gate_up, qdtype)
    wq, ws = quant_rows.quant_rows_triton(silu_and_mul_triton(gate_up), qdtype)
    assert torch.equal(q.view(torch.uint8), wq.view(torch.uint8)) and torch.equal(s, ws)


@pytest.mark.parametrize("m", [1, 5, 16, 40])
@pytest.mark.parametrize("k,n", [(4096, 6144), (4096, 4096), (14336, 4096), (1024, 1000)])
@pytest.mark.parametrize("wdtype", [torch.float8_e4m3fn, torch.int8])
def test_w8a16_gemm_split_k_in_a_cuda_graph(m, k, n, wdtype):
    # the weight-only W8A16 GEMM at decode sizes splits K and sums the splits in the kernel (no zero-fill, no cast):
    # replayed twice from a CUDA graph on fresh inputs, the counters reset and every replay matches the reference
    from kvant.kernels.w8a16_gemm import w8a16_gemm_ref, w8a16_gemm_triton

    w = (torch.randn(n, k, device="cuda") * 20).clamp(-127, 127)
    w = w.round().to(torch.int8) if wdtype == torch.int8 else w.to(wdtype)
    scale = torch.rand(n, 1, device="cuda") / (20 * k**0.5) + 1e-4
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    replay_twice(lambda: w8a16_gemm_triton(x, w, scale), x,
                 lambda out: torch.testing.assert_close(out.float(), w8a16_gemm_ref(x, w, scale).float(), atol=2e-2,
                                                        rtol=2e-2))


@pytest.mark.parametrize("m", [33, 64, 128, 256])
@pytest.mark.parametrize("k,n", [(4096, 6144), (14336, 4096), (4096, 28672)])
@pytest.mark.parametrize("fmt", ["fp8", "int8"])
@pytest.mark.parametrize("config", [None, (64, 128, 128, 4, 4, 1), (128, 64, 128, 4, 4, 2)])
def test_w8a8_gemm_mid_rows_in_a_cuda_graph(m, k, n, fmt, config):
    # the W8A8 scaled GEMM at a busy decode step's row counts, with and without split-K, replayed twice from a CUDA
    # graph on fresh inputs against the reference
    from kvant.kernels import fp8_gemm, int8_gemm
    from kvant.kernels.scaled_gemm import scaled_gemm_triton

    mod = fp8_gemm if fmt == "fp8" else int8_gemm
    quant = getattr(mod, f"quant_{fmt}_per_token_triton")
    wq, ws = quant(torch.randn(n, k, device="cuda", dtype=torch.bfloat16))
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)

    def run():
        xq, xs = quant(x)
        return scaled_gemm_triton(xq, wq, xs.view(-1), ws.view(-1), torch.bfloat16, config=config)

    def check(out):
        xq, xs = quant(x)
        ref = getattr(mod, f"{fmt}_gemm_ref")(xq, xs, wq, ws, torch.bfloat16).float()
        torch.testing.assert_close(out.float(), ref, atol=2e-2 * ref.abs().max().item(), rtol=2e-2)

    replay_twice(run, x, check)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="programmatic dependent launch needs compute capability 9.0")
@pytest.mark.parametrize("m", [1, 16])
def test_pdl_chain_in_a_cuda_graph_equals_plain_launches(monkeypatch, m):
    # a decode layer's chain of dependent kernels, each reading the one before's output at once: launched with
    # programmatic dependent launch (KVANT_PDL=1) and captured in a CUDA graph, replayed twice on fresh inputs, it
    # gives bit for bit what plain launches give (a kernel that read before its wait would race and differ)
    from kvant.kernels import dispatch, quant_rows, skinny_gemm
    from kvant.kernels.rmsnorm import rms_norm_triton
    from kvant.kernels.sampling import sample_tokens_triton
    from kvant.kernels.w4a16_layout import repack_w4
    from kvant.kernels.w4a16_repacked import w4a16_repacked_gemm
    from kvant.kernels.w8a16_gemm import w8a16_gemm_triton

    h, i, g = 4096, 14336, 128
    x = torch.randn(m, h, device="cuda", dtype=torch.bfloat16)
    res = torch.randn_like(x)
    norm_w = torch.rand(h, device="cuda", dtype=torch.bfloat16) + 0.5
    w16 = (torch.randn(2 * i, h, device="cuda") / h**0.5).to(torch.bfloat16)
    w8 = (torch.randn(h, 2 * i, device="cuda") * 20).clamp(-448, 448).to(FP8)
    s8 = torch.rand(h, device="cuda") / (20 * i**0.5) + 1e-4
    q4 = torch.randint(-8, 8, (h, h), device="cuda", dtype=torch.int8)
    qweight, scales, zeros = repack_w4(pack_int4(q4), (torch.rand(h, h // g, device="cuda") * 0.01 + 1e-3)
                                       .to(torch.bfloat16), g, None)
    temp, seeds = torch.zeros(m, device="cuda"), torch.arange(m, device="cuda", dtype=torch.int64)

    def chain():
        y, summed = rms_norm_triton(x, norm_w, 1e-5, res)
        gate_up = skinny_gemm.skinny_gemm_triton(y, w16, None, (64, 128, 4, 4, 2))
        down = w8a16_gemm_triton(gate_up, w8, s8)  # split K, reduced in the kernel
        o = w4a16_repacked_gemm(down, qweight, scales, g, zeros)
        q, s, _ = quant_rows.rms_norm_quant_triton(o, norm_w, 1e-5, summed, FP8)
        logits = skinny_gemm.skinny_gemm_triton(o, w16, None, (64, 128, 4, 4, 2))
        tokens = sample_tokens_triton(logits, temp, seeds)  # plain launches (torch ops) only from here on
        return torch.cat([o.float().flatten(), q.view(torch.uint8).float().flatten(), s.flatten(), tokens.float()])

    outs = {}
    for pdl in (False, True):
        monkeypatch.setattr(dispatch, "PDL", pdl)
        assert dispatch.pdl_launch(x.device)["PDL"] == pdl
        torch.manual_seed(0)
        got = []
        replay_twice(chain, x, lambda out: got.append(out.clone()))
        outs[pdl] = got
    for plain, chained in zip(outs[False], outs[True]):
        assert torch.equal(plain, chained)
