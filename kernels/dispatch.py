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


def num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 8  # the interpreter: any small count exercises the split paths
    return torch.cuda.get_device_properties(device).multi_processor_count


def interpreted(kernel) -> bool:
    """True when `kernel` runs under TRITON_INTERPRET=1, whose numpy tl.dot mishandles bf16 operands (it multiplies
    their raw uint16 bits): kernels then upcast dot operands to fp32, which is exact for bf16 values."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)
