import torch


def on_cuda(*tensors: torch.Tensor | None) -> bool:
    """True when every given tensor is on a CUDA device: the Triton path; otherwise the torch reference runs."""
    return all(t is None or t.is_cuda for t in tensors)


def scale_value(scale: float | torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """A per-layer scale (None = 1.0) as a 1-element fp32 tensor on `device`."""
    if scale is None:
        scale = 1.0
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise ValueError(f"scale must hold one value, got shape {tuple(scale.shape)}")
        return scale.detach().reshape(1).to(device=device, dtype=torch.float32)
    return torch.tensor([float(scale)], device=device, dtype=torch.float32)


def per_row(scale: torch.Tensor, rows: int, name: str) -> torch.Tensor:
    """A per-row scale ([rows, 1], [rows] or one value) as a contiguous fp32 [rows] tensor."""
    if scale.numel() == 1:
        return scale.detach().reshape(1).float().expand(rows).contiguous()
    if scale.numel() != rows:
        raise ValueError(f"{name} must have {rows} or 1 elements, got shape {tuple(scale.shape)}")
    return scale.detach().reshape(rows).float().contiguous()


def scale_float(scale: float | torch.Tensor | None) -> float:
    """A per-layer scale as a Python float for a kernel argument (engines keep these as floats: no device sync)."""
    if scale is None:
        return 1.0
    if isinstance(scale, torch.Tensor) and scale.numel() != 1:
        raise ValueError(f"scale must hold one value, got shape {tuple(scale.shape)}")
    return float(scale)
