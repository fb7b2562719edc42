import pytest

from kvant.artifact.errors import KvantError
from kvant.artifact.schemes import scheme_of
from kvant.engine.kernel_select import SCHEMES, parse_arch, select_path

CARDS = {"sm_80": (8, 0), "sm_86": (8, 6), "sm_87": (8, 7), "sm_89": (8, 9), "sm_90": (9, 0), "sm_120": (12, 0)}
# expected GEMM path per scheme and card, written out by hand from the capability rules
EXPECTED = {
    "bf16": dict.fromkeys(CARDS, "bf16"),
    "w4a16": dict.fromkeys(CARDS, "w4a16"),
    "w8a16": dict.fromkeys(CARDS, "w8a16"),
    "w8a8-int8": dict.fromkeys(CARDS, "int8_w8a8"),
    "fp8-dynamic": {"sm_80": "fp8_weight_only", "sm_86": "fp8_weight_only", "sm_87": "fp8_weight_only",
                    "sm_89": "fp8_w8a8", "sm_90": "fp8_w8a8", "sm_120": "fp8_w8a8"},
    "fp8-static": {"sm_80": "fp8_weight_only", "sm_86": "fp8_weight_only", "sm_87": "fp8_weight_only",
                   "sm_89": "fp8_w8a8", "sm_90": "fp8_w8a8", "sm_120": "fp8_w8a8"},
}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("kv", ["auto", "fp8"])
def test_every_scheme_and_capability_has_a_path(scheme, card, kv):
    path = select_path(scheme, CARDS[card], kv)
    assert path.gemm == EXPECTED[scheme][card]
    assert path.kv_cache == ("fp8_stored_16bit_compute" if kv == "fp8" else "16bit")
    assert card in path.reason


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("cap", [(7, 5), (7, 0), (6, 1)])
def test_pre_ampere_is_refused_clearly(scheme, cap):
    with pytest.raises(KvantError, match=rf"Ampere \(sm_80\).*sm_{cap[0]}{cap[1]}"):
        select_path(scheme, cap)


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="scheme"):
        select_path("int3", (9, 0))
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        select_path("bf16", (9, 0), "int8")
    with pytest.raises(ValueError, match="kernel_arch"):
        parse_arch("ampere")
    assert parse_arch("sm_86") == (8, 6) and parse_arch("SM89") == (8, 9)


def _group(weights, acts=None):
    return {"quant_method": "compressed-tensors",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": acts}}}


@pytest.mark.parametrize("cfg, scheme", [
    (None, "bf16"),
    (_group({"num_bits": 4, "type": "int", "group_size": 128}), "w4a16"),
    (_group({"num_bits": 8, "type": "int"}), "w8a16"),
    (_group({"num_bits": 8, "type": "int"}, {"num_bits": 8, "type": "int", "dynamic": True}), "w8a8-int8"),
    (_group({"num_bits": 8, "type": "float"}, {"num_bits": 8, "type": "float", "dynamic": True}), "fp8-dynamic"),
    (_group({"num_bits": 8, "type": "float"}, {"num_bits": 8, "type": "float", "dynamic": False}), "fp8-static"),
])
def test_scheme_of_compressed_tensors_configs(cfg, scheme):
    assert scheme_of(cfg) == scheme


def test_unsupported_scheme_is_named():
    with pytest.raises(KvantError, match="3-bit int"):
        scheme_of(_group({"num_bits": 3, "type": "int"}))


# ---- applied at load: the engine sets each layer's path from the scheme and the (forced) capability

def _fp8_model():
    import torch

    from kvant.engine.config import ModelConfig
    from kvant.engine.loader import dummy_model
    from kvant.quantize.rtn import quantize_model_rtn

    cfg = ModelConfig(architecture="LlamaForCausalLM", vocab_size=128, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                      max_position_embeddings=128, max_model_len=64, tie_word_embeddings=False, eos_token_ids=(2,),
                      rope_theta=10000.0,
                      quantization_config={"quant_method": "compressed-tensors", "config_groups": {"g": {
                          "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
                          "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                                "dynamic": True}}}})
    return quantize_model_rtn(dummy_model(cfg, dtype=torch.float32, seed=3), "fp8")


@pytest.mark.parametrize("arch, weight_only", [("sm_86", True), ("sm_87", True), ("sm_89", False), ("sm_90", False)])
def test_engine_applies_fp8_path_for_the_forced_arch(arch, weight_only):
    import torch

    from kvant.engine.llm import LLM
    from kvant.engine.quant_linear import Fp8Linear
    from kvant.engine.sampling_params import SamplingParams
    from kvant.kernels.w8a16_gemm import w8a16_gemm_ref

    model = _fp8_model()
    llm = LLM.from_model(model, None, kernel_arch=arch, num_kv_blocks=16, max_model_len=64)
    assert llm.engine.kernel_path.gemm == ("fp8_weight_only" if weight_only else "fp8_w8a8")
    layer = model.model.layers[0].mlp.gate_up_proj
    assert isinstance(layer, Fp8Linear) and layer.weight_only is weight_only
    x = torch.randn(3, 64)
    expected = w8a16_gemm_ref(x, layer.weight, layer.weight_scale)
    # weight-only keeps activations in 16/32 bit: exactly the dequantized-weight product; W8A8 quantizes x too
    if weight_only:
        torch.testing.assert_close(layer(x), expected)
    else:
        assert not torch.equal(layer(x), expected)
        torch.testing.assert_close(layer(x), expected, rtol=0.15, atol=0.05)
    # the paged engine on this path decodes what the plain forward of the same layers decodes
    out = llm.generate([[1, 2, 3, 4]], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert list(out[0].outputs[0].token_ids) == _greedy_reference(model, [1, 2, 3, 4], 4)


def _greedy_reference(model, prompt: list[int], num_tokens: int) -> list[int]:
    # no attention context set: the model's forward is plain causal attention over the whole sequence
    import torch

    ids = list(prompt)
    with torch.no_grad():
        for _ in range(num_tokens):
            hidden = model(torch.tensor(ids), torch.arange(len(ids)))
            ids.append(int(model.compute_logits(hidden[-1:]).argmax(-1)))
    return ids[len(prompt):]


def test_engine_refuses_pre_ampere_with_a_clear_message():
    from kvant.artifact.errors import KvantError
    from kvant.engine.llm import LLM

    with pytest.raises(KvantError, match="Ampere.*sm_75"):
        LLM.from_model(_fp8_model(), None, kernel_arch="sm_75", num_kv_blocks=16, max_model_len=64)


def test_bad_kernel_arch_is_named():
    from kvant.engine.llm import LLM

    with pytest.raises(ValueError, match="kernel_arch must look like sm_86"):
        LLM.from_model(_fp8_model(), None, kernel_arch="ampere", num_kv_blocks=16, max_model_len=64)


def test_cpu_model_without_forced_arch_runs_references():
    import torch

    from kvant.engine.llm import LLM
    from kvant.engine.quant_linear import Fp8Linear
    from kvant.kernels.fp8_gemm import fp8_gemm_ref, quant_fp8_per_token_ref

    model = _fp8_model()
    llm = LLM.from_model(model, None, num_kv_blocks=16, max_model_len=64)
    assert llm.engine.kernel_path is None
    # no path applied: the checkpoint's W8A8 layer as loaded, computing the torch reference at every batch size
    layer = model.model.layers[0].mlp.gate_up_proj
    assert isinstance(layer, Fp8Linear) and not layer.weight_only and layer.weight_only_max_m == 0
    for rows in (1, 5):
        x = torch.randn(rows, 64)
        xq, xs = quant_fp8_per_token_ref(x)
        torch.testing.assert_close(layer(x), fp8_gemm_ref(xq, xs, layer.weight, layer.weight_scale, x.dtype))


@pytest.mark.parametrize("scheme", ["fp8", "int8"])
def test_w8a8_inputs_come_quantised_from_the_norm_and_activation(monkeypatch, scheme):
    # On CUDA the RMSNorm before a W8A8 qkv / gate_up projection, and the SiLU·mul before down_proj, write their output
    # quantised per token (kvant.kernels.quant_rows) and the layer takes it as is. Here the CUDA-only condition is
    # lifted so the CPU references run that path: those layers are fed a QuantAct, only o_proj (fed by attention)
    # quantises its own input, and the logits match the unfused forward's.
    import torch

    from kvant.engine import model as model_mod
    from kvant.engine import quant_linear as QL
    from kvant.engine.config import ModelConfig
    from kvant.engine.loader import dummy_model
    from kvant.quantize.rtn import quantize_model_rtn

    w = {"num_bits": 8, "type": "float" if scheme == "fp8" else "int", "strategy": "channel"}
    ia = dict(w, strategy="token", dynamic=True)
    cfg = ModelConfig(architecture="LlamaForCausalLM", vocab_size=128, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                      max_position_embeddings=128, max_model_len=64, tie_word_embeddings=False, eos_token_ids=(2,),
                      rope_theta=10000.0, quantization_config={"quant_method": "compressed-tensors", "config_groups": {
                          "g": {"weights": w, "input_activations": ia}}})
    model = quantize_model_rtn(dummy_model(cfg, dtype=torch.bfloat16, seed=3), scheme).eval()
    ids, pos = torch.tensor([5, 9, 17, 3]), torch.arange(4)
    with torch.inference_mode():
        want = model.compute_logits(model(ids, pos))
    layers = [m for m in model.modules() if isinstance(m, (QL.Fp8Linear, QL.Int8Linear))]
    assert len(layers) == 2 * 4
    fed, own_calls = [], []
    for name, layer in model.named_modules():
        if layer in layers:
            layer.register_forward_pre_hook(lambda mod, args, n=name: fed.append((n.split(".")[-1], type(args[0]))))
    own = {"fp8": "quant_fp8_per_token", "int8": "quant_int8_per_token"}[scheme]
    real = getattr(QL, own)
    monkeypatch.setattr(QL, own, lambda x: own_calls.append(x.shape) or real(x))
    monkeypatch.setattr(model_mod, "act_quant", lambda linear, x: getattr(linear, "act_quant", lambda rows: None)(
        x.numel() // x.shape[-1]))
    with torch.inference_mode():
        got = model.compute_logits(model(ids, pos))
    assert [t for n, t in fed if n != "o_proj"] == [model_mod.QuantAct] * 6
    assert [t for n, t in fed if n == "o_proj"] == [torch.Tensor] * 2 and len(own_calls) == 2
    torch.testing.assert_close(got, want, atol=0.05 * float(want.abs().max()), rtol=0)
