import pytest
import torch

from kvant.kernels.int4_pack import pack_int4, unpack_int4
from kvant.quantize import primitives as P
from kvant.quantize.gptq import gptq_quantize
from kvant.quantize.linear_quant import quantize_weight
from kvant.artifact.schemes import get_scheme


# ---- naive references, written element by element from the compressed-tensors formulas ----
def naive_int4_sym(w, g):
    n, k = w.shape
    q = torch.zeros(n, k, dtype=torch.int8)
    scale = torch.zeros(n, k // g)
    for r in range(n):
        for j in range(k // g):
            block = [float(v) for v in w[r, j * g:(j + 1) * g]]
            s = max(max(abs(v) for v in block), 0.0) / 7.5
            s = float(torch.tensor(s).to(torch.bfloat16).float())
            scale[r, j] = s
            for c, v in enumerate(block):
                q[r, j * g + c] = int(min(max(round(v / s), -8), 7))
    return q, scale


def naive_int4_asym(w, g):
    n, k = w.shape
    q = torch.zeros(n, k, dtype=torch.int8)
    zp = torch.zeros(n, k // g, dtype=torch.int8)
    scale = torch.zeros(n, k // g)
    for r in range(n):
        for j in range(k // g):
            block = [float(v) for v in w[r, j * g:(j + 1) * g]]
            lo, hi = min(min(block), 0.0), max(max(block), 0.0)
            s = float(torch.tensor((hi - lo) / 15).to(torch.bfloat16).float())
            z = int(min(max(round(-8 - lo / s), -8), 7))
            scale[r, j], zp[r, j] = s, z
            for c, v in enumerate(block):
                q[r, j * g + c] = int(min(max(round(v / s) + z, -8), 7))
    return q, scale, zp


def naive_mse_range(block, symmetric):
    # one group's (lo, hi) by brute force over llm-compressor's MSE grid: 20 shrinks 1 - i / 100, error sum |e| ** 2.4
    lo0, hi0 = min(min(block), 0.0), max(max(block), 0.0)
    best = None
    for i in range(20):
        p = 1 - i / 100
        lo, hi = lo0 * p, hi0 * p
        if symmetric:
            s, z = max(-lo, hi) / 7.5, 0
        else:
            s = (hi - lo) / 15
        s = max(float(torch.tensor(s).to(torch.bfloat16).float()), P.MIN_STORED_SCALE)
        if not symmetric:
            z = int(min(max(round(-8 - lo / s), -8), 7))
        err = sum(abs((min(max(round(v / s + z), -8), 7) - z) * s - v) ** 2.4 for v in block)
        if best is None or err < best[0]:
            best = (err, s, z)
    return best[1], best[2]


def naive_pack(q):
    # bit layout from the research note: column 8w+j of a row in bits [4j, 4j+4) of word w, value + 8
    n, k = q.shape
    out = torch.zeros(n, k // 8, dtype=torch.int64)
    for r in range(n):
        for w in range(k // 8):
            word = 0
            for j in range(8):
                word |= (int(q[r, 8 * w + j]) + 8) << (4 * j)
            out[r, w] = word - (1 << 32) if word >= 1 << 31 else word
    return out.to(torch.int32)


@pytest.fixture
def w():
    torch.manual_seed(0)
    return torch.randn(12, 64) * torch.linspace(0.1, 3.0, 64)


def test_int4_symmetric_matches_naive(w):
    q, scale, zp = P.quantize_int4_groupwise(w, 16)
    nq, nscale = naive_int4_sym(w, 16)
    assert zp is None
    torch.testing.assert_close(scale.float(), nscale)
    # round-half-even (torch) vs Python's round: both are banker's rounding
    assert torch.equal(q, nq)
    assert q.min() >= -8 and q.max() <= 7


def test_int4_asymmetric_matches_naive(w):
    q, scale, zp = P.quantize_int4_groupwise(w + 0.5, 32, symmetric=False)
    nq, nscale, nzp = naive_int4_asym(w + 0.5, 32)
    torch.testing.assert_close(scale.float(), nscale)
    assert torch.equal(zp, nzp) and torch.equal(q, nq)
    deq = P.dequantize_int4(q, scale, zp, 32)
    # each value is within half a step of its group's grid (clamping only at the range ends, which hold 0 inside)
    assert float(((deq - (w + 0.5)).abs() / scale.float().repeat_interleave(32, 1)).max()) <= 0.5 + 1e-4


@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_mse_observer_matches_naive_grid_search(w, symmetric):
    x = w + 0.3 * (not symmetric)
    x[0, 3] = 9.0  # an outlier: clipping it lowers the rest of its group's error
    scale, zp = P.int4_qparams(x, 16, symmetric, observer="mse")
    for r in range(x.shape[0]):
        for j in range(x.shape[1] // 16):
            s, z = naive_mse_range([float(v) for v in x[r, j * 16:(j + 1) * 16]], symmetric)
            assert float(scale[r, j]) == pytest.approx(s, rel=1e-6)
            assert zp is None if symmetric else int(zp[r, j]) == z
    # never worse than the full range on the error it minimises, and strictly better somewhere
    full_scale, full_zp = P.int4_qparams(x, 16, symmetric)
    err = lambda s, z: ((P.dequantize_int4(P.quantize_int4_with(x, s, z, 16), s, z, 16) - x).abs() ** 2.4
                        ).reshape(x.shape[0], -1, 16).sum(-1)
    assert bool((err(scale, zp) <= err(full_scale, full_zp) + 1e-6).all())
    assert bool((err(scale, zp) < err(full_scale, full_zp) - 1e-6).any())


def test_unknown_observer_is_refused(w):
    with pytest.raises(ValueError, match="observer"):
        P.int4_qparams(w, 16, observer="percentile")


def test_fp8_per_channel_round_trip(w):
    q, scale = P.quantize_fp8_per_channel(w)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (12, 1)
    amax = w.abs().amax(dim=1, keepdim=True)
    torch.testing.assert_close(scale.float(), (amax / 448).to(torch.bfloat16).float())
    deq = q.float() * scale.float()
    # e4m3 has 3 mantissa bits: relative error <= 2^-4 for normal values
    big = w.abs() > amax / 64
    assert float(((deq - w).abs() / w.abs())[big].max()) <= 2 ** -4 + 1e-6


def test_int8_per_channel(w):  # per-token activations: tests/kernels/test_refs.py
    q, scale = P.quantize_int8_per_channel(w)
    expected = (w.abs().amax(dim=1, keepdim=True) / 127.5).to(torch.bfloat16).float()
    torch.testing.assert_close(scale.float(), expected)
    assert torch.equal(q, torch.round(w / expected).clamp(-128, 127).to(torch.int8))


def test_pack_matches_bit_layout():
    torch.manual_seed(1)
    q = torch.randint(-8, 8, (7, 40), dtype=torch.int8)
    q[0, :8] = torch.tensor([-8, 7, -1, 0, 3, -5, 6, 7])  # top nibble 15 sets bit 31 (negative int32)
    packed = pack_int4(q)
    assert packed.dtype == torch.int32 and packed.shape == (7, 5)
    assert torch.equal(packed, naive_pack(q))
    assert torch.equal(unpack_int4(packed, 40), q)


def test_pack_matches_compressed_tensors():
    ct = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    torch.manual_seed(2)
    q = torch.randint(-8, 8, (16, 64), dtype=torch.int8)
    theirs = ct.pack_to_int32(q, 4)
    assert torch.equal(pack_int4(q), theirs.to(torch.int32))


def test_gptq_beats_rtn_on_output_error():
    torch.manual_seed(3)
    x = torch.randn(512, 64) @ torch.randn(64, 64) * 0.3  # correlated inputs, where GPTQ helps
    w = torch.randn(32, 64)
    scheme = get_scheme("W4A16", 16)
    h = 2 * x.t() @ x / x.shape[0]
    _, rtn, _ = quantize_weight(w, scheme, torch.float32)
    stored, gptq, loss = quantize_weight(w, scheme, torch.float32, h, actorder=True)
    err = lambda wq: float((x @ (wq - w).t()).pow(2).mean())
    assert err(gptq) < 0.8 * err(rtn)
    assert loss is not None and loss > 0
    # every GPTQ weight lies on its group's grid (the scales of the original w): re-quantizing changes nothing
    scale = P.int4_qparams(w, 16, True, torch.float32)[0]
    torch.testing.assert_close(P.dequantize_int4(P.quantize_int4_with(gptq, scale, None, 16), scale, None, 16), gptq)
    # and the checkpoint tensors hold exactly those weights: what the next layer was calibrated on is what loads
    codes = unpack_int4(stored["weight_packed"], w.shape[1])
    torch.testing.assert_close(P.dequantize_int4(codes, stored["weight_scale"], None, 16), gptq)


@pytest.mark.parametrize("name,group,observer", [("W4A16", 16, "mse"), ("W4A16_ASYM", 16, "minmax"),
                                                  ("W8A16_INT8", None, "minmax"), ("FP8_DYNAMIC", None, "minmax")])
def test_stacked_gptq_gives_each_linear_what_its_own_run_gives(name, group, observer):
    # q/k/v (and gate/up) read one input: GPTQ's rows are independent given the shared Hessian, so one stacked run
    # must give every row block the codes, scales and weights of that Linear's own run
    from kvant.quantize.linear_quant import quantize_stacked

    torch.manual_seed(5)
    x = torch.randn(256, 64) @ torch.randn(64, 64) * 0.3
    h = 2 * x.t() @ x / x.shape[0]
    ws = [torch.randn(16, 64), torch.randn(8, 64), torch.randn(24, 64)]
    scheme = get_scheme(name, group) if group else get_scheme(name)
    stacked = quantize_stacked(ws, scheme, torch.bfloat16, h, actorder=True, observer=observer)
    for w, (tensors, deq) in zip(ws, stacked):
        own_tensors, own_deq, _ = quantize_weight(w, scheme, torch.bfloat16, h, actorder=True, observer=observer)
        assert deq.shape == w.shape and tensors.keys() == own_tensors.keys()
        torch.testing.assert_close(deq, own_deq, rtol=1e-5, atol=1e-5)
        for key, t in tensors.items():
            assert torch.equal(t.float(), own_tensors[key].float()), key


def test_stacking_refuses_one_scale_per_tensor():
    from kvant.quantize.linear_quant import quantize_stacked

    with pytest.raises(ValueError, match="cannot be stacked"):
        quantize_stacked([torch.randn(4, 16)] * 2, get_scheme("FP8_STATIC"), torch.bfloat16, torch.eye(16))


def test_mse_ranges_are_remembered_by_the_weights_bytes():
    from kvant.quantize import linear_quant

    torch.manual_seed(6)
    w = torch.randn(16, 64)
    scheme = get_scheme("W4A16", 16)
    linear_quant._mse_memo.clear()
    first, _, _ = quantize_weight(w, scheme, torch.bfloat16, observer="mse")
    assert len(linear_quant._mse_memo) == 1
    again, _, _ = quantize_weight(w.clone(), scheme, torch.bfloat16, observer="mse")
    assert len(linear_quant._mse_memo) == 1 and all(torch.equal(again[k], first[k]) for k in first)
    fresh = P.int4_qparams(w, 16, True, torch.bfloat16, "mse")[0]
    assert torch.equal(first["weight_scale"].float(), fresh.to(torch.bfloat16).float())  # the memo's is the real one
    other = w.clone()
    other[0, 0] += 1.0  # one changed weight is another key
    quantize_weight(other, scheme, torch.bfloat16, observer="mse")
    assert len(linear_quant._mse_memo) == 2


def test_gptq_identity_hessian_is_rtn():
    # with H = I no column's error can be compensated by the others, so GPTQ reduces to round-to-nearest
    torch.manual_seed(4)
    w = torch.randn(8, 32)
    scheme = get_scheme("W8A8_INT8")
    _, rtn, _ = quantize_weight(w, scheme, torch.float32)
    _, gptq, _ = quantize_weight(w, scheme, torch.float32, torch.eye(32), actorder=False)
    torch.testing.assert_close(gptq, rtn)


def test_gptq_falls_back_when_hessian_is_not_positive_definite():
    w = torch.randn(4, 16)
    h = -torch.eye(16)
    result = gptq_quantize(w, h, torch.full_like(w, 0.25), qmin=-128, qmax=127, dampening_frac=0.01)
    assert result.fell_back
    torch.testing.assert_close(result.weight, (torch.round(w / 0.25).clamp(-128, 127)) * 0.25)


@pytest.mark.parametrize("name,group", [("W4A16", 32), ("W4A16_ASYM", 32), ("FP8_DYNAMIC", None), ("W8A16_INT8", None)])
def test_rtn_codes_equal_compressed_tensors_on_bf16_weights(name, group):
    # data-free artifacts carry exactly the codes compressed-tensors' own quantize() gives for the same bf16 weights
    # and scales (its quotient w / scale is taken in bf16; an fp32 quotient flips ~1-3 % of codes near ties)
    ct = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.quantization.lifecycle.forward import quantize as ct_quantize

    torch.manual_seed(7)
    w = (torch.randn(48, 128) * 0.05).to(torch.bfloat16)
    scheme = get_scheme(name, group)
    tensors, deq, _ = quantize_weight(w.float(), scheme, torch.bfloat16)
    a = scheme.weights
    args = ct.QuantizationArgs(**a.to_config())
    scale = tensors["weight_scale"]
    zp = None
    if a.num_bits == 4:
        if "weight_zero_point" in tensors:
            zp = unpack_int4(tensors["weight_zero_point"].t().contiguous(), 48).t().contiguous()
        ours = unpack_int4(tensors["weight_packed"], 128).float()
        theirs = ct_quantize(w, scale, zp, args).float()  # codes with the zero point added, as packed
    else:
        ours = tensors["weight"].float()
        theirs = ct_quantize(w, scale, None, args, dtype=tensors["weight"].dtype).float()
    assert torch.equal(ours, theirs)
    # and the fp32 quotient would not have: these weights do contain near-tie codes
    fp32 = w.float() / scale.float().repeat_interleave(128 // scale.shape[1], dim=1)
    if a.type == "float":
        fp32 = fp32.clamp(-448, 448).to(torch.float8_e4m3fn).float()
    else:
        if zp is not None:
            fp32 = fp32 + zp.float().repeat_interleave(group, dim=1)
        fp32 = torch.round(fp32).clamp(-8, 7) if a.num_bits == 4 else torch.round(fp32).clamp(-128, 127)
    assert not torch.equal(fp32, theirs)
