"""q/k/v and gate/up merged into one qkv_proj / gate_up_proj at load, for bf16 and every compressed-tensors format.

The checkpoints here are written by hand with separate q/k/v/gate/up tensors, as artifacts store them; head_dim 10
and intermediate 100 put part boundaries inside packed zero-point words (20 and 100 rows are not multiples of 8).
"""
import pytest
import torch

from kvant.engine.config import ModelConfig
from kvant.artifact.errors import KvantError
from kvant.engine.loader import build_model, load_weights
from kvant.engine.model import stacked_parts
from kvant.kernels.int4_pack import pack_int4
from kvant.kernels.w4a16_gemm import dequant_w4_ref

FP8 = torch.float8_e4m3fn
CFG = ModelConfig(architecture="Qwen2ForCausalLM", vocab_size=128, hidden_size=64, intermediate_size=100,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=10,
                  max_position_embeddings=128, max_model_len=64, tie_word_embeddings=False, eos_token_ids=(1,),
                  attention_bias=True)
PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj")
GROUP = 16
DENSE_IN_W4 = ("self_attn.o_proj", "mlp.down_proj")  # input sizes 40 and 100: no INT4 groups of 16 (ignored)


def _shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    h, i, q, kv = cfg.hidden_size, cfg.intermediate_size, 40, 20
    return {"self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, q), "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h), "mlp.down_proj": (h, i)}


def _pack_zero_points_naive(zp: torch.Tensor) -> torch.Tensor:
    # int [N, G] in [-8, 7] -> int32 [ceil(N / 8), G]: row r in word r // 8, bits 4 (r % 8); written bit by bit
    n, g = zp.shape
    out = [[0] * g for _ in range((n + 7) // 8)]
    for r in range(n):
        for c in range(g):
            out[r // 8][c] |= (int(zp[r, c]) + 8) << (4 * (r % 8))
    return torch.tensor([[v - (1 << 32) if v >= 1 << 31 else v for v in row] for row in out], dtype=torch.int32)


def _checkpoint(fmt: str, gen: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(checkpoint tensors with separate projections, the dense fp32 weight each projection computes with)."""
    tensors, dense = {}, {}
    v, h = CFG.vocab_size, CFG.hidden_size
    tensors["model.embed_tokens.weight"] = torch.randn(v, h, generator=gen)
    tensors["lm_head.weight"] = 0.1 * torch.randn(v, h, generator=gen)
    tensors["model.norm.weight"] = 1 + 0.1 * torch.randn(h, generator=gen)
    for layer in range(CFG.num_hidden_layers):
        pre = f"model.layers.{layer}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[pre + norm + ".weight"] = 1 + 0.1 * torch.randn(h, generator=gen)
        for proj in ("q_proj", "k_proj", "v_proj"):
            tensors[pre + f"self_attn.{proj}.bias"] = 0.1 * torch.randn(_shapes(CFG)[f"self_attn.{proj}"][0],
                                                                         generator=gen)
        for proj, (n, k) in _shapes(CFG).items():
            name = pre + proj
            if fmt == "bf16" or (fmt == "w4a16-asym" and proj in DENSE_IN_W4):
                w = 0.1 * torch.randn(n, k, generator=gen)
                tensors[name + ".weight"], dense[name] = w, w
            elif fmt == "w4a16-asym":
                q = torch.randint(-8, 8, (n, k), generator=gen, dtype=torch.int8)
                scale = 0.01 + 0.01 * torch.rand(n, k // GROUP, generator=gen)
                zp = torch.randint(-8, 8, (n, k // GROUP), generator=gen)
                tensors.update({name + ".weight_packed": pack_int4(q), name + ".weight_scale": scale,
                                name + ".weight_zero_point": _pack_zero_points_naive(zp),
                                name + ".weight_shape": torch.tensor([n, k])})
                dense[name] = (q.float() - zp.float().repeat_interleave(GROUP, 1)) * scale.repeat_interleave(GROUP, 1)
            else:  # fp8-static: per-tensor weight scale and a static input scale that differs between the parts
                w8 = (4 * torch.randn(n, k, generator=gen)).to(FP8)
                scale = 0.01 + 0.01 * torch.rand(1, generator=gen)
                tensors.update({name + ".weight": w8, name + ".weight_scale": scale,
                                name + ".input_scale": 0.01 + 0.05 * torch.rand(1, generator=gen)})
                dense[name] = w8.float() * scale
    return tensors, dense


def _qconfig(fmt: str) -> dict | None:
    if fmt == "bf16":
        return None
    if fmt == "w4a16-asym":
        scheme = {"weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": GROUP,
                              "symmetric": False}, "input_activations": None}
    else:
        scheme = {"weights": {"num_bits": 8, "type": "float", "strategy": "tensor", "symmetric": True},
                  "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False}}
    ignore = ["lm_head"] + (["re:.*o_proj", "re:.*down_proj"] if fmt == "w4a16-asym" else [])
    return {"quant_method": "compressed-tensors", "ignore": ignore,
            "config_groups": {"group_0": dict(scheme, targets=["Linear"])}}


def _load(fmt: str, seed: int = 0):
    tensors, dense = _checkpoint(fmt, torch.Generator().manual_seed(seed))
    cfg = ModelConfig(**{**{f: getattr(CFG, f) for f in CFG.__slots__}, "quantization_config": _qconfig(fmt)})
    model = build_model(cfg, torch.float32, "cpu")
    load_weights(model, tensors.items())
    return model, tensors, dense


@pytest.mark.parametrize("fmt", ["bf16", "w4a16-asym", "fp8-static"])
def test_merged_module_computes_its_parts_stacked(fmt):
    model, tensors, dense = _load(fmt)
    x = torch.randn(5, CFG.hidden_size, generator=torch.Generator().manual_seed(1))
    for layer in range(CFG.num_hidden_layers):
        for merged in (f"model.layers.{layer}.self_attn.qkv_proj", f"model.layers.{layer}.mlp.gate_up_proj"):
            module = model.get_submodule(merged)
            with torch.no_grad():
                y = module(x)
            for part, first, rows in stacked_parts(model.config, merged):
                if fmt == "fp8-static":
                    # activations quantized once with the largest of the parts' static scales
                    scales = [tensors[p + ".input_scale"] for p, _, _ in stacked_parts(model.config, merged)]
                    assert module.input_scale.item() == max(s.item() for s in scales)
                    s = module.input_scale.item()
                    xq = (x / s).clamp(-448, 448).to(FP8).float() * s
                    expected = xq @ dense[part].t()
                else:
                    expected = x @ dense[part].t()
                if part + ".bias" in tensors:
                    expected = expected + tensors[part + ".bias"]
                torch.testing.assert_close(y[:, first:first + rows], expected, rtol=1e-5, atol=1e-5)


def test_merged_int4_zero_points_decode_to_every_parts_own():
    model, tensors, dense = _load("w4a16-asym", seed=3)
    for merged in ("model.layers.1.self_attn.qkv_proj", "model.layers.1.mlp.gate_up_proj"):
        m = model.get_submodule(merged)
        w = dequant_w4_ref(*m.checkpoint_tensors()[:2], m.group_size, m.checkpoint_tensors()[2])
        expected = torch.cat([dense[p] for p, _, _ in stacked_parts(model.config, merged)])
        assert torch.equal(w, expected)
        assert m.weight_shape.tolist() == [expected.shape[0], CFG.hidden_size]


@pytest.mark.parametrize("fmt", ["bf16", "w4a16-asym"])
def test_merged_model_logits_equal_the_dense_reference(fmt):
    # the quantized model against a bf16-path model holding the dequantized weights: same function
    model, tensors, dense = _load(fmt)
    plain = build_model(CFG, torch.float32, "cpu")
    quantized = (".weight_packed", ".weight_scale", ".weight_zero_point", ".weight_shape")
    tensors = {k: v for k, v in tensors.items() if not k.endswith(quantized)}
    for name, w in dense.items():
        tensors[name + ".weight"] = w
    load_weights(plain, tensors.items())
    ids = torch.randint(0, CFG.vocab_size, (12,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = model.compute_logits(model(ids, torch.arange(12)))
        b = plain.compute_logits(plain(ids, torch.arange(12)))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_missing_part_is_named_with_its_checkpoint_name():
    tensors, _ = _checkpoint("bf16", torch.Generator().manual_seed(0))
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    with pytest.raises(KvantError, match=r"lacks model\.layers\.1\.self_attn\.k_proj\.weight"):
        load_weights(build_model(CFG, torch.float32, "cpu"), tensors.items())


def test_parts_with_different_schemes_are_refused():
    qc = _qconfig("w4a16-asym")
    qc["ignore"] = qc["ignore"] + ["re:.*k_proj"]
    cfg = ModelConfig(**{**{f: getattr(CFG, f) for f in CFG.__slots__}, "quantization_config": qc})
    with pytest.raises(KvantError, match="qkv_proj are quantized differently"):
        build_model(cfg, torch.float32, "cpu")


def test_post_load_hook_runs_once_on_every_module_that_defines_it():
    calls = []
    model = build_model(CFG, torch.float32, "cpu")
    for name in ("model.layers.0.self_attn.qkv_proj", "model.layers.1.mlp.down_proj"):
        model.get_submodule(name).process_weights_after_loading = lambda name=name: calls.append(name)
    tensors, _ = _checkpoint("bf16", torch.Generator().manual_seed(0))
    load_weights(model, tensors.items())
    assert sorted(calls) == ["model.layers.0.self_attn.qkv_proj", "model.layers.1.mlp.down_proj"]
