"""Which kernel runs each layer, from the artifact's scheme and the card's compute capability.

| scheme        | sm_80 / 86 / 87 (Ampere, Orin)       | sm_89 / 90+ (Ada, Hopper)        |
|---------------|--------------------------------------|----------------------------------|
| bf16          | bf16 GEMM                            | bf16 GEMM                        |
| w4a16         | W4A16 GEMM (dequantize in registers) | same                             |
| w8a16         | W8A16 GEMM                           | same                             |
| w8a8-int8     | INT8 W8A8 GEMM                       | same                             |
| fp8 (W8A8)    | FP8 weight-only (16-bit activations) | FP8 W8A8 GEMM (FP8 tensor cores) |
| fp8 KV cache  | stored as FP8, computed in 16-bit    | same                             |

Cards before Ampere (sm_75 and older) lack bf16 tensor cores and the async copies the Triton kernels use: refused
with a clear message. `--kernel-arch sm_86` forces a smaller card's paths on a bigger card, for testing.
"""
import logging
import re
from dataclasses import dataclass

from kvant.artifact.errors import KvantError
from kvant.artifact.schemes import BF16, FP8_DYNAMIC, FP8_STATIC, SCHEME_NAMES, W4A16, W8A8_INT8, W8A16, scheme_of

log = logging.getLogger("kvant.kernels")

SCHEMES = (BF16, *SCHEME_NAMES)  # what a model may run: unquantized or one of the artifact's schemes
MIN_CAPABILITY = (8, 0)
FP8_TENSOR_CORES = (8, 9)


@dataclass(slots=True, frozen=True)
class KernelPath:
    gemm: str  # "bf16" | "w4a16" | "w8a16" | "int8_w8a8" | "fp8_w8a8" | "fp8_weight_only"
    kv_cache: str  # "16bit" | "fp8_stored_16bit_compute"
    reason: str


def parse_arch(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"sm_?(\d)(\d)", text.strip().lower())
    if not m:
        raise ValueError(f"kernel_arch must look like sm_86, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def select_path(scheme: str, capability: tuple[int, int], kv_cache_dtype: str = "auto") -> KernelPath:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if kv_cache_dtype not in ("auto", "fp8"):
        raise ValueError(f"kv_cache_dtype must be auto or fp8, got {kv_cache_dtype!r}")
    sm = f"sm_{capability[0]}{capability[1]}"
    if capability < MIN_CAPABILITY:
        raise KvantError(f"kvant needs an Ampere (sm_80) or newer NVIDIA GPU for its bf16 and quantized kernels; "
                         f"this card is {sm}")
    kv = "fp8_stored_16bit_compute" if kv_cache_dtype == "fp8" else "16bit"
    if scheme in (FP8_DYNAMIC, FP8_STATIC):
        if capability >= FP8_TENSOR_CORES:
            return KernelPath("fp8_w8a8", kv, f"{sm} has FP8 tensor cores")
        return KernelPath("fp8_weight_only", kv, f"{sm} has no FP8 tensor cores: FP8 weights, 16-bit activations")
    gemm = {BF16: "bf16", W4A16: "w4a16", W8A16: "w8a16", W8A8_INT8: "int8_w8a8"}[scheme]
    return KernelPath(gemm, kv, f"{sm} runs {gemm} natively")


# FP8 cards, decode sizes: at up to this many rows the FP8 weights go through the W8A16 kernel with 16-bit
# activations, skipping the per-token activation quant and the FP8 GEMM (bench/decode_gemm.py, bench/RESULTS.md)
FP8_WEIGHT_ONLY_MAX_M = 16


def log_choice(scheme: str, path: KernelPath) -> None:
    log.info("kernels: %s artifact -> %s GEMM, KV cache %s (%s)", scheme, path.gemm, path.kv_cache, path.reason)


def apply_kernel_paths(model, kv_cache_dtype: str = "auto", kernel_arch: str | None = None,
                       decode_rows: tuple[int, ...] = ()) -> KernelPath | None:
    """Pick the GEMM path of every quantized layer of a built model for the card it runs on (or for `kernel_arch`,
    which forces a smaller card's paths), swap each FP8 layer for one built for that path and log it once. On CUDA,
    the 16-bit linears of the decoder layers run kvant's decode GEMM at those of `decode_rows` (the decode graphs'
    batch sizes) where it measured faster than cuBLAS (`use_skinny_gemm`). None where no choice is made: a CPU model
    without a forced arch runs the torch references."""
    import torch

    from kvant.engine.quant_linear import Fp8Linear

    device = next(model.parameters()).device
    if kernel_arch:
        capability = parse_arch(kernel_arch)
    elif device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
    else:
        return None
    scheme = scheme_of(getattr(model.config, "quantization_config", None))
    path = select_path(scheme, capability, kv_cache_dtype)
    for name, module in list(model.named_modules()):
        if isinstance(module, Fp8Linear):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.on_path(
                path.gemm == "fp8_weight_only", FP8_WEIGHT_ONLY_MAX_M if device.type == "cuda" else 0))
    if device.type == "cuda" and decode_rows:
        use_skinny_gemm(model, decode_rows)
    log_choice(scheme, path)
    return path


def use_skinny_gemm(model, decode_rows: tuple[int, ...]) -> int:
    """Swap each 16-bit nn.Linear of the decoder layers (the LM head and embeddings stay) for a SkinnyLinear whose
    picks come from kvant.kernels.skinny_gemm.pick, measured once per card, shape and row count and kept on disk;
    each mlp.down_proj is also measured with SiLU·mul fused in (its silu_picks). The 8-bit layers that run weight-only
    at decode sizes (W8A16, and FP8 up to its weight-only row bound) get their own picks against the W8A16 GEMM.
    KVANT_SKINNY_GEMM=0 keeps cuBLAS, the W8A16 GEMM and the separate SiLU·mul kernel everywhere (for A/B runs).
    Returns how many layers got at least one pick."""
    import os

    import torch
    from torch import nn

    from kvant.engine.quant_linear import Fp8Linear, SkinnyLinear, W8A16Linear
    from kvant.kernels.dispatch import per_row
    from kvant.kernels.skinny_gemm import MAX_M, pick

    if os.environ.get("KVANT_SKINNY_GEMM", "1") == "0":
        return 0
    rows = sorted({m for m in decode_rows if 1 <= m <= MAX_M})
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    x_dtype = embed.weight.dtype if embed is not None else None  # the activations' dtype
    swapped = fused = weight_only = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, (W8A16Linear, Fp8Linear)) and x_dtype in (torch.bfloat16, torch.float16):
            bound = MAX_M if isinstance(module, W8A16Linear) or module.weight_only else module.weight_only_max_m
            w, has_bias = module.weight, module.bias is not None
            picks = {m: c for m in rows if m <= bound and (c := pick(w, m, has_bias, x_dtype=x_dtype)) is not None}
            # the scale as fp32 [N] once, for either kernel (the W8A16 GEMM would otherwise convert it every call)
            module.row_scale = per_row(module.weight_scale, w.shape[0], "weight_scale")
            if picks:
                module.decode_picks = picks
                weight_only += 1
            continue
        if type(module) is not nn.Linear or ".layers." not in f".{name}." or module.weight.dtype not in (
                torch.bfloat16, torch.float16):
            continue
        w, has_bias = module.weight, module.bias is not None
        picks = {m: c for m in rows if (c := pick(w, m, has_bias)) is not None}
        down = name.endswith("mlp.down_proj")  # MLP.forward hands it gate_up: SiLU·mul may run inside its GEMM
        silu_picks = {m: c for m in rows if down and (c := pick(w, m, has_bias, silu_mul=True)) is not None}
        if picks or silu_picks:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, SkinnyLinear.from_linear(module, picks, silu_picks))
            swapped, fused = swapped + 1, fused + bool(silu_picks)
    log.info("kernels: kvant's decode GEMM replaces cuBLAS in %d 16-bit layers at some batch sizes (%d down_proj with "
             "SiLU·mul fused in), and the W8A16 GEMM in %d 8-bit layers", swapped, fused, weight_only)
    return swapped + weight_only
