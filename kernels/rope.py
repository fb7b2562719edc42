import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import on_cuda


def _rope_one_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [T, H, D]; cos/sin [T, 1, D/2]; neox: rotate the halves (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def apply_rope_ref(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor):
    # q [T, Hq, D], k [T, Hkv, D], positions [T], cos_sin [max_pos, D] = cat(cos, sin) of [max_pos, D/2]
    half = q.shape[-1] // 2
    cs = cos_sin[positions.long()].float()
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    return _rope_one_ref(q, cos, sin), _rope_one_ref(k, cos, sin)


@triton.jit
def _rope_kernel(x_ptr, out_ptr, pos_ptr, cs_ptr, stride_xt, stride_xh, H,
                 HALF: tl.constexpr, BLOCK_H: tl.constexpr):
    t = tl.program_id(0)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    d = tl.arange(0, HALF)
    cos = tl.load(cs_ptr + pos * 2 * HALF + d)[None, :]
    sin = tl.load(cs_ptr + pos * 2 * HALF + HALF + d)[None, :]
    h = tl.arange(0, BLOCK_H)[:, None]
    mask = h < H
    src = x_ptr + t.to(tl.int64) * stride_xt + h * stride_xh + d[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    dst = out_ptr + t.to(tl.int64) * H * 2 * HALF + h * 2 * HALF + d[None, :]
    tl.store(dst, (x1 * cos - x2 * sin).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, (x2 * cos + x1 * sin).to(out_ptr.dtype.element_ty), mask=mask)


def _rope_one_triton(x: torch.Tensor, positions: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
    t, h, d = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    out = torch.empty(t, h, d, dtype=x.dtype, device=x.device)
    if t:
        _rope_kernel[(t,)](x, out, positions, cs, x.stride(0), x.stride(1), h,
                           HALF=d // 2, BLOCK_H=triton.next_power_of_2(h))
    return out


def apply_rope_triton(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor):
    d = q.shape[-1]
    if d % 2 or d & (d - 1):
        raise ValueError(f"head_dim must be a power of two for the Triton RoPE kernel, got {d}")
    if cos_sin.shape[-1] != d:
        raise ValueError(f"cos_sin must have {d} columns (cos then sin), got shape {tuple(cos_sin.shape)}")
    cs = cos_sin.float().contiguous()
    positions = positions.contiguous()
    return _rope_one_triton(q, positions, cs), _rope_one_triton(k, positions, cs)


def apply_rope(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor):
    if on_cuda(q, k, positions, cos_sin):
        return apply_rope_triton(q, k, positions, cos_sin)
    return apply_rope_ref(q, k, positions, cos_sin)
