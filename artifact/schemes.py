"""The one scheme registry: kvant's scheme names (kvant.json "scheme") with what each implies (card tags, default
recovery gate), the presets in compressed-tensors vocabulary as frozen dataclasses, and the mapping back from a
checkpoint's `quantization_config` to a scheme name."""
from dataclasses import dataclass

from kvant.artifact.errors import KvantError

# kvant's scheme names: the only place each is spelled
BF16 = "bf16"  # not quantized (no quantization_config)
W4A16 = "w4a16"
W8A16 = "w8a16"
W8A8_INT8 = "w8a8-int8"
FP8_DYNAMIC = "fp8-dynamic"
FP8_STATIC = "fp8-static"


@dataclass(slots=True, frozen=True)
class SchemeInfo:
    weight_tag: str  # weight format: Hub tag and `kvant bench --quant` name
    scheme_tag: str  # Hub tag of the weight/activation pairing
    description: str  # one line for the model card
    min_recovery: float  # default gate: minimum recovery (quantized / base score) of every gated task


SCHEME_INFO: dict[str, SchemeInfo] = {
    W4A16: SchemeInfo("int4", "w4a16", "INT4 weights (symmetric, group-wise scales), 16-bit activations", 0.96),
    W8A16: SchemeInfo("int8", "w8a16", "INT8 weights (per-channel scales), 16-bit activations", 0.98),
    W8A8_INT8: SchemeInfo("int8", "w8a8", "INT8 weights (per-channel) and INT8 activations (dynamic per-token)", 0.98),
    FP8_DYNAMIC: SchemeInfo("fp8", "w8a8", "FP8 E4M3 weights (per-channel) and FP8 activations (dynamic per-token)",
                            0.99),
    FP8_STATIC: SchemeInfo("fp8", "w8a8",
                           "FP8 E4M3 weights (per-channel) and FP8 activations (static per-tensor scales)", 0.99),
}
SCHEME_NAMES = tuple(SCHEME_INFO)  # what kvant.json may name


def scheme_info(name: str) -> SchemeInfo:
    if name not in SCHEME_INFO:
        raise ValueError(f"scheme must be one of {', '.join(SCHEME_NAMES)}, got {name!r}")
    return SCHEME_INFO[name]


TYPES = ("int", "float")
STRATEGIES = ("tensor", "channel", "group", "token")
GROUP_SIZES = (128, 64, 32, 16, 8)  # fallback order when a layer's input size is not a multiple of the group size


@dataclass(slots=True, frozen=True)
class QuantArgs:
    num_bits: int
    type: str = "int"
    symmetric: bool = True
    strategy: str = "channel"
    group_size: int | None = None
    dynamic: bool = False
    observer: str | None = "memoryless_minmax"

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"type must be one of {TYPES}, got {self.type!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        allowed_bits = (8,) if self.type == "float" else (4, 8)
        if self.num_bits not in allowed_bits:
            raise ValueError(f"num_bits must be one of {allowed_bits} for type {self.type}, got {self.num_bits}")
        if self.strategy == "group":
            if not isinstance(self.group_size, int) or self.group_size <= 0 or self.group_size % 8:
                raise ValueError(f"group_size must be a positive multiple of 8, got {self.group_size!r}")
        elif self.group_size is not None:
            raise ValueError(f"group_size is only valid with strategy 'group', got {self.group_size} for {self.strategy}")
        if self.strategy == "token" and not self.dynamic:
            raise ValueError("dynamic must be true for strategy 'token'")

    def to_config(self, actorder: str | None = None) -> dict:
        # exactly the keys compressed-tensors 0.19/0.20 serialise for QuantizationArgs
        return {"actorder": actorder, "block_structure": None, "dynamic": self.dynamic, "group_size": self.group_size,
                "num_bits": self.num_bits, "observer": self.observer, "observer_kwargs": {}, "scale_dtype": None,
                "strategy": self.strategy, "symmetric": self.symmetric, "type": self.type,
                "zp_dtype": None if self.symmetric else "torch.int8"}


@dataclass(slots=True, frozen=True)
class Scheme:
    name: str  # kvant.json "scheme"
    weights: QuantArgs
    input_activations: QuantArgs | None = None

    def __post_init__(self):
        if self.input_activations is not None and self.input_activations.type != self.weights.type:
            raise ValueError("input_activations.type must equal weights.type")

    @property
    def format(self) -> str:
        if self.weights.num_bits == 4:
            return "pack-quantized"
        return "float-quantized" if self.weights.type == "float" else "int-quantized"

    @property
    def needs_activation_stats(self) -> bool:
        return self.input_activations is not None and not self.input_activations.dynamic

    def with_group_size(self, group_size: int) -> "Scheme":
        w = self.weights
        return Scheme(self.name, QuantArgs(w.num_bits, w.type, w.symmetric, w.strategy, group_size, w.dynamic,
                                           w.observer), self.input_activations)


_INT8_TOKEN = QuantArgs(8, "int", strategy="token", dynamic=True, observer=None)
_FP8_TOKEN = QuantArgs(8, "float", strategy="token", dynamic=True, observer=None)

SCHEMES: dict[str, Scheme] = {
    "FP8_DYNAMIC": Scheme(FP8_DYNAMIC, QuantArgs(8, "float", strategy="channel"), _FP8_TOKEN),
    "FP8_STATIC": Scheme(FP8_STATIC, QuantArgs(8, "float", strategy="tensor"),
                         QuantArgs(8, "float", strategy="tensor", observer="static_minmax")),
    "W8A8_INT8": Scheme(W8A8_INT8, QuantArgs(8, "int", strategy="channel"), _INT8_TOKEN),
    "W8A16_INT8": Scheme(W8A16, QuantArgs(8, "int", strategy="channel")),
    "W4A16": Scheme(W4A16, QuantArgs(4, "int", strategy="group", group_size=128)),
    "W4A16_ASYM": Scheme(W4A16, QuantArgs(4, "int", symmetric=False, strategy="group", group_size=128)),
}
# llm-compressor's preset names for the same schemes
ALIASES = {"FP8": "FP8_STATIC", "W8A8": "W8A8_INT8", "INT8": "W8A8_INT8", "W8A16": "W8A16_INT8"}


def get_scheme(name: str, group_size: int | None = None) -> Scheme:
    key = ALIASES.get(name.upper(), name.upper())
    if key not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)} (or {sorted(ALIASES)}), got {name!r}")
    scheme = SCHEMES[key]
    if group_size is not None:
        if scheme.weights.strategy != "group":
            raise ValueError(f"group_size applies only to group-wise schemes (W4A16*), not {key}")
        scheme = scheme.with_group_size(group_size)
    return scheme


def fallback_group_size(in_features: int, group_size: int) -> int | None:
    # the largest of group_size, 128, 64, ... (not above group_size) dividing in_features; None if none does
    for g in (group_size, *[g for g in GROUP_SIZES if g < group_size]):
        if in_features % g == 0:
            return g
    return None


def kv_cache_config() -> dict:
    return QuantArgs(8, "float", strategy="tensor", observer=None).to_config()


def scheme_of(quantization_config: dict | None) -> str:
    """The kvant scheme name of a compressed-tensors `quantization_config` (BF16 when there is none)."""
    if not quantization_config:
        return BF16
    groups = quantization_config.get("config_groups") or {}
    if not groups:
        raise KvantError("quantization_config has no config_groups")
    weights = next(iter(groups.values())).get("weights") or {}
    acts = next(iter(groups.values())).get("input_activations")
    bits, kind = weights.get("num_bits"), weights.get("type", "int")
    if kind == "float" and bits == 8:
        return FP8_DYNAMIC if not acts or acts.get("dynamic", False) else FP8_STATIC
    if kind == "int" and bits == 4 and not acts:
        return W4A16
    if kind == "int" and bits == 8:
        return W8A16 if not acts else W8A8_INT8
    raise KvantError(f"unsupported quantization scheme: {bits}-bit {kind} weights"
                     f"{' with quantized activations' if acts else ''}")
