"""The engine side of the decode GEMM on CPU: SkinnyLinear's fused SiLU·mul entry point falls back to the unfused
path off CUDA, MLP.forward hands it gate_up, and use_skinny_gemm gives each mlp.down_proj its fused picks (with a
fake pick: the measuring is kvant.kernels.skinny_gemm's business)."""
import pytest
import torch
from torch import nn

from kvant.engine import kernel_select
from kvant.engine.config import ModelConfig
from kvant.engine.model import MLP
from kvant.engine.quant_linear import SkinnyLinear
from kvant.kernels import skinny_gemm
from kvant.kernels.activation import silu_and_mul

CFG = ModelConfig(architecture="LlamaForCausalLM", vocab_size=128, hidden_size=48, intermediate_size=80,
                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=24)
CONFIG = (64, 128, 4, 4, 2)


def test_forward_silu_mul_on_cpu_is_the_unfused_path():
    g = torch.Generator().manual_seed(0)
    down = nn.Linear(80, 48, bias=True).to(torch.bfloat16)
    gate_up = torch.randn(2, 3, 160, generator=g).bfloat16()  # [B, T, 2I]
    skinny = SkinnyLinear.from_linear(down, {6: CONFIG}, {6: CONFIG})  # picks at 6 rows: CUDA only
    assert torch.equal(skinny.forward_silu_mul(gate_up), down(silu_and_mul(gate_up)))


def test_mlp_hands_gate_up_to_a_skinny_down_proj():
    torch.manual_seed(0)
    mlp = MLP(CFG).to(torch.bfloat16)
    x = torch.randn(5, 48).bfloat16()
    want = mlp(x)
    seen = []
    mlp.down_proj = SkinnyLinear.from_linear(mlp.down_proj, {}, {5: CONFIG})
    mlp.down_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    assert torch.equal(mlp(x), want)
    assert seen == [(5, 80)]  # on CPU: the activated [T, I] through the module, as before


def _model() -> nn.Module:
    layer = nn.Module()
    layer.mlp, layer.o_proj = MLP(CFG), nn.Linear(48, 48, bias=False)
    model = nn.Module()
    model.layers = nn.ModuleList([layer])
    return model.to(torch.bfloat16)


def test_use_skinny_gemm_gives_down_proj_its_fused_picks(monkeypatch):
    asked = []

    def fake_pick(w, m, has_bias, timer=None, silu_mul=False):  # only the fused kernel wins, only at 1 row
        asked.append((tuple(w.shape), m, silu_mul))
        return CONFIG if silu_mul and m == 1 else None

    monkeypatch.setattr(skinny_gemm, "pick", fake_pick)
    model = _model()
    assert kernel_select.use_skinny_gemm(model, (1, 8, 100)) == 1  # 100 rows: above MAX_M, never measured
    down = model.layers[0].mlp.down_proj
    assert type(down) is SkinnyLinear and down.picks == {} and down.silu_picks == {1: CONFIG}
    assert type(model.layers[0].mlp.gate_up_proj) is nn.Linear and type(model.layers[0].o_proj) is nn.Linear
    assert sorted(a for a in asked if a[2]) == [((48, 80), 1, True), ((48, 80), 8, True)]  # down_proj alone
    assert len(asked) == 3 * 2 + 2


def test_skinny_gemm_off_keeps_every_linear(monkeypatch):
    monkeypatch.setenv("KVANT_SKINNY_GEMM", "0")
    monkeypatch.setattr(skinny_gemm, "pick", lambda *a, **k: pytest.fail("measured with KVANT_SKINNY_GEMM=0"))
    model = _model()
    assert kernel_select.use_skinny_gemm(model, (1, 8)) == 0
    assert not any(isinstance(mod, SkinnyLinear) for mod in model.modules())


def test_use_skinny_gemm_gives_8bit_weight_only_layers_their_picks(monkeypatch):
    # W8A16 layers at every decode row count up to MAX_M, FP8 W8A8 layers only where they run weight-only (up to
    # weight_only_max_m rows); each pick is raced for the model's activation dtype and keeps the scale as fp32 [N]
    from kvant.engine.quant_linear import Fp8Linear, W8A16Linear
    from kvant.kernels.formats import FP8

    asked = []

    def fake_pick(w, m, has_bias, timer=None, silu_mul=False, x_dtype=None):
        asked.append((w.dtype, m, x_dtype))
        return CONFIG if m < 32 else None

    monkeypatch.setattr(skinny_gemm, "pick", fake_pick)
    layer = nn.Module()
    layer.w8 = W8A16Linear(64, 32, False, torch.int8, (32, 1))
    layer.fp8 = Fp8Linear(64, 48, False, (1,), static=False, weight_only_max_m=16)
    for mod in (layer.w8, layer.fp8):
        mod.weight_scale.fill_(0.5)
    model = nn.Module()
    model.model = nn.Module()
    model.model.embed_tokens = nn.Embedding(10, 64).to(torch.bfloat16)
    model.model.layers = nn.ModuleList([layer])
    assert kernel_select.use_skinny_gemm(model, (1, 8, 32)) == 2
    assert layer.w8.decode_picks == {1: CONFIG, 8: CONFIG} and layer.fp8.decode_picks == {1: CONFIG, 8: CONFIG}
    assert sorted((str(d), m) for d, m, _ in asked) == [("torch.float8_e4m3fn", 1), ("torch.float8_e4m3fn", 8),
                                                        ("torch.int8", 1), ("torch.int8", 8), ("torch.int8", 32)]
    assert {x for *_, x in asked} == {torch.bfloat16}
    assert layer.fp8.row_scale.dtype == torch.float32 and layer.fp8.row_scale.shape == (48,)
    assert torch.equal(layer.fp8.row_scale, torch.full((48,), 0.5))
    assert layer.fp8.weight.dtype == FP8 and Fp8Linear.decode_picks == {}  # set per layer, not on the class
