"""Round-to-nearest in-place quantization of an engine model (what `kvant bench --quant` runs on random weights)."""
import pytest
import torch

from kvant.engine.config import ModelConfig
from kvant.engine.loader import dummy_model
from kvant.engine import quant_linear as QL
from kvant.quantize.primitives import dequantize_int4
from kvant.kernels.int4_pack import unpack_int4
from kvant.quantize.rtn import quantize_model_rtn

CFG = ModelConfig(architecture="LlamaForCausalLM", vocab_size=256, hidden_size=128, intermediate_size=256,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                  max_position_embeddings=256, max_model_len=128, tie_word_embeddings=False, eos_token_ids=(2,),
                  rope_theta=10000.0)
KINDS = {"fp8": QL.Fp8Linear, "int8": QL.Int8Linear, "int4": QL.W4A16Linear, "w8a16": QL.W8A16Linear}


@pytest.mark.parametrize("quant", sorted(KINDS))
def test_rtn_swaps_decoder_linears_and_keeps_outputs_close(quant):
    model = dummy_model(CFG, dtype=torch.float32, seed=1)
    ids, pos = torch.randint(0, CFG.vocab_size, (24,)), torch.arange(24)
    with torch.no_grad():
        ref = model.compute_logits(model(ids, pos))
        quantize_model_rtn(model, quant)
        out = model.compute_logits(model(ids, pos))
    assert isinstance(model.model.layers[1].self_attn.qkv_proj, KINDS[quant])
    assert isinstance(model.model.layers[0].mlp.down_proj, KINDS[quant])
    assert isinstance(model.lm_head, torch.nn.Linear) and not isinstance(model.lm_head, QL._QuantLinear)
    err = ((out - ref).norm() / ref.norm()).item()
    assert 0 < err < {"int4": 0.5, "fp8": 0.2}.get(quant, 0.06), err


def test_rtn_int4_weights_dequantize_to_the_original_within_half_a_step():
    model = dummy_model(CFG, dtype=torch.float32, seed=2)
    w = model.model.layers[0].mlp.gate_up_proj.weight.detach().clone()
    quantize_model_rtn(model, "int4")
    layer = model.model.layers[0].mlp.gate_up_proj
    weight_packed, weight_scale, _ = layer.checkpoint_tensors()  # repacked at load; rebuilt exactly
    q = unpack_int4(weight_packed, w.shape[1])
    deq = dequantize_int4(q, weight_scale, None, layer.group_size)
    step = weight_scale.float().repeat_interleave(layer.group_size, dim=1)
    assert ((deq - w).abs() <= step / 2 + 1e-6).all()


def test_rtn_rejects_unknown_format():
    with pytest.raises(ValueError, match="quant must be one of"):
        quantize_model_rtn(dummy_model(CFG, dtype=torch.float32), "int3")


def test_rtn_records_the_scheme_for_kernel_selection():
    from kvant.engine.kernel_select import scheme_of

    model = quantize_model_rtn(dummy_model(CFG, dtype=torch.float32), "fp8")
    assert scheme_of(model.config.quantization_config) == "fp8-dynamic"
    model = quantize_model_rtn(dummy_model(CFG, dtype=torch.float32), "int4")
    assert scheme_of(model.config.quantization_config) == "w4a16"
