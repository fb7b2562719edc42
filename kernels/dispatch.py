import functools
import os

import torch
import triton
import triton.language as tl


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


# ---- programmatic dependent launch (Hopper and later) ----
# On compute capability 9.0+ the decode step's Triton kernels launch with the programmatic-stream-serialization
# attribute: a kernel's programs may be scheduled while the kernel before it drains, and they wait at `pdl_enter`
# (griddepcontrol) until it has finished and its writes are visible. Each kernel that launches this way calls
# `pdl_enter` before its first access to memory that an earlier kernel may write (the tensor-core W4A16 GEMV reads its
# first weight block before it: weights are never written in a step), so a chain of them is as ordered as plain
# launches; any other kernel (cuBLAS, torch) is a full barrier. On by default: in the engine's A/B (H100,
# bench/RESULTS.md, 2026-12-07) it took batch-1 TPOT down 14 % for INT4, 9 % for FP8 and 2 % for bf16, with batch 64
# within +-4 %. KVANT_PDL=0 turns it off.
PDL = os.environ.get("KVANT_PDL", "1") == "1"


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def device_capability(device: torch.device) -> tuple[int, int]:
    """A CUDA device's compute capability, asked of the driver once per device (dispatch checks it on every call)."""
    return _capability(device.index if device.index is not None else torch.cuda.current_device())


def _pdl_capable(index: int) -> bool:
    return _capability(index)[0] >= 9


def pdl_launch(device: torch.device) -> dict:
    """Keywords for a kernel launch with a `PDL: tl.constexpr` parameter: PDL on where enabled and the device is a
    CUDA device of compute capability 9.0 or later (never under the interpreter: `device` is then the CPU)."""
    if PDL and device.type == "cuda" and _pdl_capable(device.index if device.index is not None else 0):
        return {"PDL": True, "launch_pdl": True}
    return {"PDL": False}


@triton.jit
def pdl_enter(PDL: tl.constexpr):
    # wait for the kernel before this one (its writes visible), then let the next one be scheduled
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
