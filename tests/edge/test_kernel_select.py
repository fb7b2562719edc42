import pytest

from kvant.engine.errors import KvantError
from kvant.engine.kernel_select import SCHEMES, parse_arch, scheme_of, select_path

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
