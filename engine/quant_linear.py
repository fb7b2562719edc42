"""Runtime Linear modules for compressed-tensors checkpoints; buffers carry the on-disk names and each forward calls
a kvant.kernels function (Triton on CUDA, the torch reference on CPU)."""
import torch
from torch import nn

from kvant.artifact.errors import KvantError
from kvant.artifact.targets import group_for
from kvant.engine.model import QuantAct, stacked_output_sizes, stacked_parts
from kvant.kernels.activation import silu_and_mul
from kvant.kernels.formats import FP8
from kvant.kernels.fp8_gemm import fp8_gemm, quant_fp8_per_tensor, quant_fp8_per_token
from kvant.kernels.int8_gemm import int8_gemm, quant_int8_per_token
from kvant.kernels.skinny_gemm import skinny_gemm_triton
from kvant.kernels.w4a16_cpu import CpuW4, prepare_w4_cpu, w4a16_cpu_gemm
from kvant.kernels.w4a16_gemm import w4a16_gemm
from kvant.kernels.w4a16_layout import repack_w4, unrepack_w4
from kvant.kernels.w4a16_repacked import w4a16_repacked_gemm, w4a16_repacked_silu_mul_gemm
from kvant.kernels.w8a16_gemm import w8a16_gemm


class _QuantLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.in_features)

    def _bias(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.bias is None else y + self.bias

    def _out(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return y.reshape(*x.shape[:-1], self.out_features)


class _WeightOnly8(_QuantLinear):
    """An 8-bit weight (int8 / fp8 [N, K], scale per row or per tensor) run with 16-bit activations: kvant's decode
    GEMM at the row counts where it measured faster on this card (`decode_picks`: rows -> config, set by
    kvant.engine.kernel_select.use_skinny_gemm with `row_scale`, the scale as fp32 [N]), the W8A16 GEMM elsewhere."""
    decode_picks: dict[int, tuple] = {}
    row_scale: torch.Tensor | None = None

    def _weight_only(self, flat: torch.Tensor) -> torch.Tensor:
        config = self.decode_picks.get(flat.shape[0]) if flat.is_cuda else None
        if config is None:
            scale = self.row_scale if self.row_scale is not None else self.weight_scale
            return self._bias(w8a16_gemm(flat, self.weight, scale))
        return skinny_gemm_triton(flat, self.weight, self.bias, config, scale=self.row_scale)


class W4A16Linear(_QuantLinear):
    def __init__(self, in_features, out_features, bias, group_size: int, symmetric: bool = True):
        super().__init__(in_features, out_features, bias)
        self.group_size = group_size
        self.register_buffer("weight_packed", torch.empty(out_features, in_features // 8, dtype=torch.int32))
        self.register_buffer("weight_scale", torch.empty(out_features, in_features // group_size))
        self.register_buffer("weight_shape", torch.empty(2, dtype=torch.int64))
        zp = None if symmetric else torch.empty(-(-out_features // 8), in_features // group_size, dtype=torch.int32)
        self.register_buffer("weight_zero_point", zp)
        # the kernels' layout (kvant.kernels.w4a16_layout), made once by process_weights_after_loading()
        self.register_buffer("qweight", None)
        self.register_buffer("scales", None)
        self.register_buffer("zeros", None)
        self.cpu_w4: CpuW4 | None = None  # on CPU, instead of the GPU layout

    def process_weights_after_loading(self) -> None:
        # repack once at load; the checkpoint tensors are dropped (checkpoint_tensors() rebuilds them exactly)
        if self.weight_packed is None:
            return
        if self.weight_packed.device.type == "cpu":  # CPU: kvant.kernels.w4a16_cpu's layout, checkpoint kept
            self.cpu_w4 = prepare_w4_cpu(self.weight_packed, self.weight_scale, self.group_size,
                                         self.weight_zero_point, self.weight_scale.dtype)
            return
        self.qweight, self.scales, self.zeros = repack_w4(self.weight_packed, self.weight_scale, self.group_size,
                                                          self.weight_zero_point)
        self.weight_packed = self.weight_scale = self.weight_zero_point = None

    def checkpoint_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(weight_packed, weight_scale, weight_zero_point) as compressed-tensors stores them."""
        if self.weight_packed is not None:
            return self.weight_packed, self.weight_scale, self.weight_zero_point
        return unrepack_w4(self.qweight, self.scales, self.zeros)

    def forward(self, x):
        if self.cpu_w4 is not None and x.device.type == "cpu":
            if self.cpu_w4.dtype != x.dtype:  # activations in another dtype than the scales: lay out again, once
                self.cpu_w4 = prepare_w4_cpu(self.weight_packed, self.weight_scale, self.group_size,
                                             self.weight_zero_point, x.dtype)
            return self._out(self._bias(w4a16_cpu_gemm(self._flat(x), self.cpu_w4)), x)
        if self.qweight is None:  # not processed after loading: the checkpoint-layout kernels
            y = w4a16_gemm(self._flat(x), self.weight_packed, self.weight_scale, self.group_size,
                           self.weight_zero_point)
        else:
            y = w4a16_repacked_gemm(self._flat(x), self.qweight, self.scales, self.group_size, self.zeros)
        return self._out(self._bias(y), x)

    def forward_silu_mul(self, gate_up):
        """self(silu_and_mul(gate_up)) as an MLP's down_proj: on the GPU the tensor-core GEMV applies SiLU·mul as it
        loads its input where the dispatch picks it (kvant.kernels.w4a16_repacked), so that is one launch."""
        if self.qweight is None or not gate_up.is_cuda:
            return self(silu_and_mul(gate_up))
        flat = gate_up.reshape(-1, 2 * self.in_features)
        y = w4a16_repacked_silu_mul_gemm(flat, self.qweight, self.scales, self.group_size, self.zeros)
        return self._bias(y).reshape(*gate_up.shape[:-1], self.out_features)


class W8A16Linear(_WeightOnly8):
    # int8 or fp8 weight [N, K], per-channel scale [N, 1] (or one per-tensor value); activations stay 16-bit
    def __init__(self, in_features, out_features, bias, weight_dtype: torch.dtype, scale_shape: tuple[int, ...]):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=weight_dtype))
        self.register_buffer("weight_scale", torch.empty(scale_shape))

    def forward(self, x):
        return self._out(self._weight_only(self._flat(x)), x)


class Int8Linear(_QuantLinear):
    # W8A8-INT8: int8 weight per channel, activations quantized per token at run time
    def __init__(self, in_features, out_features, bias):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.empty(out_features, 1))

    def act_quant(self, rows: int) -> torch.dtype:
        return torch.int8  # kvant.engine.model.act_quant: the producer of this layer's input may quantise it

    def forward(self, x):
        xq, xs = (x.q, x.scale) if isinstance(x, QuantAct) else quant_int8_per_token(self._flat(x))
        return self._out(int8_gemm(xq, xs, self.weight, self.weight_scale, x.dtype, self.bias), x)


class Fp8Linear(_WeightOnly8):
    # FP8 W8A8: dynamic per-token activation scales, or one static `input_scale`
    def __init__(self, in_features, out_features, bias, scale_shape: tuple[int, ...], static: bool, *,
                 weight_only: bool = False, weight_only_max_m: int = 0):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=FP8))
        self.register_buffer("weight_scale", torch.empty(scale_shape))
        self.register_buffer("input_scale", torch.empty(1) if static else None)
        self.weight_only = weight_only  # cards without FP8 tensor cores: FP8 weights, 16-bit activations
        self.weight_only_max_m = weight_only_max_m  # FP8 cards: weight-only at up to this many rows (decode)

    def on_path(self, weight_only: bool, weight_only_max_m: int) -> "Fp8Linear":
        """This layer for the kernel path the engine picked (kernel_select): a new module sharing its tensors."""
        with torch.device("meta"):
            new = Fp8Linear(self.in_features, self.out_features, self.bias is not None, tuple(self.weight_scale.shape),
                            self.input_scale is not None, weight_only=weight_only, weight_only_max_m=weight_only_max_m)
        new.bias, new.weight, new.weight_scale = self.bias, self.weight, self.weight_scale
        new.input_scale = self.input_scale
        return new

    def act_quant(self, rows: int) -> torch.dtype | None:
        # kvant.engine.model.act_quant: dynamic per-token FP8 where this layer runs W8A8 at `rows`
        if self.weight_only or rows <= self.weight_only_max_m or self.input_scale is not None:
            return None
        return FP8

    def forward(self, x):
        if isinstance(x, QuantAct):
            return self._out(fp8_gemm(x.q, x.scale, self.weight, self.weight_scale, x.dtype, self.bias), x)
        flat = self._flat(x)
        if self.weight_only or flat.shape[0] <= self.weight_only_max_m:
            return self._out(self._weight_only(flat), x)
        xq, xs = quant_fp8_per_tensor(flat, self.input_scale) if self.input_scale is not None else quant_fp8_per_token(flat)
        return self._out(fp8_gemm(xq, xs, self.weight, self.weight_scale, x.dtype, self.bias), x)


class SkinnyLinear(nn.Linear):
    """A 16-bit nn.Linear (same weight and bias tensors) that runs kvant.kernels.skinny_gemm at the row counts where
    it measured faster than cuBLAS on this card (`picks`: rows -> config), and cuBLAS everywhere else. As an MLP's
    down_proj it may also take the gate_up output and fuse SiLU·mul into the GEMM (`silu_picks`: rows -> config)."""
    picks: dict[int, tuple]
    silu_picks: dict[int, tuple]

    @classmethod
    def from_linear(cls, linear: nn.Linear, picks: dict[int, tuple],
                    silu_picks: dict[int, tuple] | None = None) -> "SkinnyLinear":
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias
        new.picks, new.silu_picks = picks, silu_picks or {}
        return new

    def forward(self, x):
        config = self.picks.get(x.numel() // self.in_features) if x.is_cuda else None
        if config is None:
            return super().forward(x)
        y = skinny_gemm_triton(x.reshape(-1, self.in_features), self.weight, self.bias, config)
        return y.reshape(*x.shape[:-1], self.out_features)

    def forward_silu_mul(self, gate_up):
        # gate_up [..., 2 * in_features] -> self(silu_and_mul(gate_up)) [..., out_features], one launch where picked
        config = self.silu_picks.get(gate_up.numel() // (2 * self.in_features)) if gate_up.is_cuda else None
        if config is None:
            return self(silu_and_mul(gate_up))
        y = skinny_gemm_triton(gate_up.reshape(-1, 2 * self.in_features), self.weight, self.bias, config, silu_mul=True)
        return y.reshape(*gate_up.shape[:-1], self.out_features)


def module_for(linear: nn.Linear, scheme: dict, merged: bool = False) -> nn.Module:
    """The runtime module of `scheme` for `linear`'s shape. A merged projection (qkv_proj, gate_up_proj) keeps
    per-tensor weight scales as one per row, so each part keeps its own scale exactly."""
    w, ia = scheme.get("weights") or {}, scheme.get("input_activations")
    n, k, bias = linear.out_features, linear.in_features, linear.bias is not None
    bits, kind, strategy = w.get("num_bits"), w.get("type", "int"), w.get("strategy")
    scale_shape = (1,) if strategy == "tensor" and not merged else (n, 1)
    if ia is None:
        if kind == "int" and bits == 4 and strategy == "group":
            return W4A16Linear(k, n, bias, int(w["group_size"]), bool(w.get("symmetric", True)))
        if bits == 8 and strategy in ("channel", "tensor") and w.get("symmetric", True):
            return W8A16Linear(k, n, bias, torch.int8 if kind == "int" else FP8, scale_shape)
    elif bits == 8 and ia.get("num_bits") == 8 and w.get("symmetric", True):
        if kind == "int" and strategy == "channel" and ia.get("strategy") == "token" and ia.get("dynamic"):
            return Int8Linear(k, n, bias)
        if kind == "float" and strategy in ("channel", "tensor"):
            if ia.get("strategy") == "token" and ia.get("dynamic"):
                return Fp8Linear(k, n, bias, scale_shape, static=False)
            if ia.get("strategy") == "tensor" and not ia.get("dynamic"):
                return Fp8Linear(k, n, bias, scale_shape, static=True)
    raise KvantError(f"unsupported compressed-tensors scheme for kvant: weights {w}, input_activations {ia}")


def _scheme_for(name: str, linear: nn.Module, quantization_config: dict) -> dict | None:
    return group_for(name, quantization_config, type(linear).__name__)


def replace_linears(model: nn.Module, quantization_config: dict) -> nn.Module:
    # swaps every targeted nn.Linear (not in `ignore`) for its runtime module, in place; shapes only, no weights.
    # A merged projection is matched through its checkpoint parts (q/k/v_proj, gate/up_proj): all must agree.
    if quantization_config.get("quant_method") != "compressed-tensors":
        raise KvantError(f"unsupported quant_method {quantization_config.get('quant_method')!r} "
                         "(kvant reads compressed-tensors checkpoints)")
    if quantization_config.get("sparsity_config") or quantization_config.get("transform_config"):
        raise KvantError("sparse or transformed compressed-tensors checkpoints are not supported")
    merged_leaves = stacked_output_sizes(model.config) if hasattr(model, "config") else {}
    for name, linear in list(model.named_modules()):
        if not isinstance(linear, nn.Linear):
            continue
        merged = name.rpartition(".")[2] in merged_leaves
        if merged:
            schemes = [_scheme_for(part, linear, quantization_config) for part, _, _ in stacked_parts(model.config, name)]
            if any(sc != schemes[0] for sc in schemes):
                raise KvantError(f"the parts of {name} are quantized differently; kvant merges them into one layer "
                                 "and needs one scheme (and the same ignore status) for all")
            scheme = schemes[0]
        else:
            scheme = _scheme_for(name, linear, quantization_config)
        if scheme is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module_for(linear, scheme, merged))
    return model
