import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kvant.kernels.dispatch import on_cuda, pdl_enter, pdl_launch


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    # x [T, 2I] -> [T, I]
    i = x.shape[-1] // 2
    g, u = x[..., :i].float(), x[..., i:].float()
    return (g * torch.sigmoid(g) * u).to(x.dtype)


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_o, I, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
    pdl_enter(PDL)
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < I
    g = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(x_ptr + row * stride_x + I + offs, mask=mask, other=0.0).to(tl.float32)
    y = g * tl.sigmoid(g) * u
    tl.store(out_ptr + row * stride_o + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul_triton(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] % 2:
        raise ValueError(f"x last dim must be even (gate and up halves), got {x.shape[-1]}")
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    t, i = x2.shape[0], shape[-1] // 2
    out = torch.empty(t, i, dtype=x.dtype, device=x.device)
    block = min(1024, triton.next_power_of_2(i))
    if t:
        _silu_and_mul_kernel[(t, triton.cdiv(i, block))](x2, out, x2.stride(0), out.stride(0), i, BLOCK=block,
                                                         **pdl_launch(x.device))
    return out.reshape(*shape[:-1], i)


def silu_and_mul_torch(x: torch.Tensor) -> torch.Tensor:
    # the CPU path: torch's fused SiLU (transformers' act_fn, one op fewer than g * sigmoid(g)), fp32 math
    i = x.shape[-1] // 2
    return (F.silu(x[..., :i].float()) * x[..., i:].float()).to(x.dtype)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    return silu_and_mul_triton(x) if on_cuda(x) else silu_and_mul_torch(x)
