"""SmoothQuant (Xiao et al.): move activation outliers into the weights, s_j = max|X_j|^a / max|W_j|^(1-a), dividing
the preceding RMSNorm's weight by s and multiplying the following Linears' input columns by s."""
import torch
from torch import nn

MIN_SCALE = 1e-5


def smoothing_scales(act_absmax: torch.Tensor, linears: list[nn.Linear], alpha: float) -> torch.Tensor:
    # act_absmax [K] over calibration tokens -> s [K]; channels whose weights are all zero keep s = act_absmax
    w_absmax = torch.stack([lin.weight.detach().abs().amax(dim=0).float() for lin in linears]).amax(dim=0)
    s = act_absmax.float().clamp(min=MIN_SCALE).pow(alpha) / w_absmax.clamp(min=MIN_SCALE).pow(1 - alpha)
    s = torch.where(w_absmax > 0, s, act_absmax.float())
    return s.clamp(min=MIN_SCALE)


@torch.no_grad()
def apply_smoothing(norm: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    # y = Linear(norm(x)) is unchanged: norm.weight / s, W[:, j] * s_j
    norm.weight.div_(s.to(norm.weight.dtype))
    for lin in linears:
        lin.weight.mul_(s.to(lin.weight.dtype))


def smooth_layer(layer: nn.Module, input_absmax: dict[str, torch.Tensor], alpha: float) -> None:
    # Llama-family pairs: input_layernorm -> q/k/v, post_attention_layernorm -> gate/up
    attn, mlp = layer.self_attn, layer.mlp
    qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
    apply_smoothing(layer.input_layernorm, qkv, smoothing_scales(input_absmax["self_attn.q_proj"], qkv, alpha))
    gu = [mlp.gate_proj, mlp.up_proj]
    apply_smoothing(layer.post_attention_layernorm, gu, smoothing_scales(input_absmax["mlp.gate_proj"], gu, alpha))
