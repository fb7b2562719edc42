"""AWQ (Lin et al.): per input channel scales s chosen by grid search so that quantizing W * s (with the input
divided by s, folded into the preceding op) loses least on calibration inputs; then a per-group clipping search.
The loss here is the MSE of the smoothed Linears' own outputs (AutoAWQ measures the enclosing block's output)."""
import torch
from torch import nn

from kvant.quantize.primitives import fake_quantize_weight

MAX_SHRINK = 0.5  # clipping search tries max |w| * (1 - i / n_grid) for i < MAX_SHRINK * n_grid
CLIP_ROWS = 64  # output rows per clipping-search chunk, bounds memory to rows * groups * tokens


def _weight_mean(linears: list[nn.Linear], group_size: int) -> torch.Tensor:
    # mean over output rows of |w| normalised by its group's max -> [K]
    w = torch.cat([lin.weight.detach().float() for lin in linears])
    g = w.abs().reshape(-1, group_size)
    return (g / (g.amax(dim=1, keepdim=True) + 1e-6)).reshape(w.shape).mean(dim=0)


@torch.no_grad()
def search_scales(x: torch.Tensor, linears: list[nn.Linear], args_of, scale_dtype: torch.dtype, *,
                  n_grid: int = 20, duo_scaling: bool = True) -> tuple[torch.Tensor, float]:
    # x [T, K] sampled inputs; args_of(linear) -> its weight QuantArgs -> (best s [K], ratio)
    group = args_of(linears[0]).group_size or x.shape[1]
    x_mean = x.abs().mean(dim=0)
    w_mean = _weight_mean(linears, group) if duo_scaling else None
    ref = [x @ lin.weight.float().t() for lin in linears]
    best = (float("inf"), torch.ones_like(x_mean), 0.0)
    for i in range(n_grid):
        r = i / n_grid
        s = x_mean.pow(r) / w_mean.pow(1 - r).clamp(min=1e-4) if duo_scaling else x_mean.pow(r)
        s = s.clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        loss = 0.0
        for lin, y in zip(linears, ref):
            wq = fake_quantize_weight(lin.weight.float() * s, args_of(lin), scale_dtype) / s
            loss += float((x @ wq.t() - y).pow(2).mean())
        if loss < best[0]:
            best = (loss, s, r)
    return best[1], best[2]


@torch.no_grad()
def apply_scales(prev: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    # prev is an RMSNorm (weight [K]) or a Linear whose output rows feed the linears' input columns
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s.to(prev.weight.dtype).unsqueeze(1))
        if prev.bias is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    else:
        prev.weight.div_(s.to(prev.weight.dtype))
    for lin in linears:
        lin.weight.mul_(s.to(lin.weight.dtype))


@torch.no_grad()
def search_clip(x: torch.Tensor, lin: nn.Linear, weights_args, scale_dtype: torch.dtype, n_grid: int = 20) -> None:
    # clamp each (row, group) of W to the max |w| that minimises that group's contribution error on x [T, K]
    group = weights_args.group_size
    w = lin.weight.float()
    n, k = w.shape
    xg = x.reshape(x.shape[0], k // group, group)  # [T, G, g]
    out = torch.empty_like(w)
    for r0 in range(0, n, CLIP_ROWS):
        wg = w[r0:r0 + CLIP_ROWS].reshape(-1, k // group, group)  # [R, G, g]
        ref = torch.einsum("tgk,rgk->rgt", xg, wg)
        org_max = wg.abs().amax(dim=-1, keepdim=True)  # [R, G, 1]
        best_err = torch.full(org_max.shape, float("inf"), device=w.device)
        best_max = org_max.clone()
        for i in range(int(MAX_SHRINK * n_grid)):
            m = org_max * (1 - i / n_grid)
            wc = torch.maximum(torch.minimum(wg, m), -m)
            wq = fake_quantize_weight(wc.reshape(-1, k), weights_args, scale_dtype).reshape(wg.shape)
            err = (torch.einsum("tgk,rgk->rgt", xg, wq) - ref).pow(2).mean(dim=-1, keepdim=True)
            better = err < best_err
            best_err, best_max = torch.where(better, err, best_err), torch.where(better, m, best_max)
        out[r0:r0 + CLIP_ROWS] = torch.maximum(torch.minimum(wg, best_max), -best_max).reshape(-1, k)
    lin.weight.copy_(out.to(lin.weight.dtype))


def awq_layer(layer: nn.Module, inputs: dict[str, torch.Tensor], args_of, scale_dtype: torch.dtype, *,
              n_grid: int, duo_scaling: bool, clip: bool) -> dict[str, float]:
    # Llama-family mappings: input_layernorm -> q/k/v, v_proj -> o_proj (only when shapes allow, i.e. no GQA),
    # post_attention_layernorm -> gate/up, up_proj -> down_proj. Returns the chosen ratio per mapping.
    attn, mlp = layer.self_attn, layer.mlp
    mappings = [("self_attn.q_proj", layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]),
                ("mlp.gate_proj", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj]),
                ("mlp.down_proj", mlp.up_proj, [mlp.down_proj])]
    if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
        mappings.insert(1, ("self_attn.o_proj", attn.v_proj, [attn.o_proj]))
    ratios = {}
    for key, prev, linears in mappings:
        x = inputs[key]
        s, ratios[key] = search_scales(x, linears, args_of, scale_dtype, n_grid=n_grid, duo_scaling=duo_scaling)
        apply_scales(prev, linears, s)
        inputs[key] = x / s  # the inputs these linears now see
    if clip:
        for key, lin in (("self_attn.v_proj", attn.v_proj), ("self_attn.o_proj", attn.o_proj),
                         ("mlp.gate_proj", mlp.gate_proj), ("mlp.up_proj", mlp.up_proj),
                         ("mlp.down_proj", mlp.down_proj)):
            # q/k are skipped as in AutoAWQ: their error is amplified by the attention softmax
            if args_of(lin).strategy == "group":
                x = inputs[key.replace("v_proj", "q_proj").replace("up_proj", "gate_proj")]
                search_clip(x, lin, args_of(lin), scale_dtype, n_grid)
    return ratios
