"""The per-layer choices of a mixed-precision artifact: candidate names -> schemes, their weight bytes (scales
included), and the units the engine quantizes as one (q/k/v and gate/up are merged into one kernel, so they share a
scheme)."""
from kvant.artifact.schemes import Scheme, fallback_group_size, get_scheme

BF16 = "bf16"
# candidate name -> (scheme preset, group size); None: left in the checkpoint dtype (the config's `ignore` list)
CANDIDATES: dict[str, tuple[str, int | None] | None] = {
    "int4-g128": ("W4A16", 128),
    "int4-g64": ("W4A16", 64),
    "int4-g32": ("W4A16", 32),
    "int8": ("W8A16_INT8", None),  # weight-only INT8, per-channel scales
    "fp8": ("FP8_DYNAMIC", None),  # FP8 weights and dynamic per-token FP8 activations
    BF16: None,
}
SCALE_BITS = 16  # every scale is stored in the checkpoint dtype (bf16)
# the parts of one merged engine projection: the unit a scheme is chosen for
MERGED = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}


def check_candidate(name: str) -> str:
    if name not in CANDIDATES:
        raise ValueError(f"layer scheme must be one of {', '.join(CANDIDATES)}, got {name!r}")
    return name


def scheme_for(name: str) -> Scheme | None:
    spec = CANDIDATES[check_candidate(name)]
    return None if spec is None else get_scheme(*spec)


def bits_per_weight(name: str, in_features: int) -> float:
    # stored bits per weight of a Linear with `in_features` inputs, its scales included
    spec = CANDIDATES[check_candidate(name)]
    if spec is None:
        return 16.0
    if spec[1] is None:  # per channel: one scale per row
        return 8 + SCALE_BITS / in_features
    group = fallback_group_size(in_features, spec[1]) or spec[1]  # the group size the plan will use
    return 4 + SCALE_BITS / group


def weight_bytes(name: str, shape: tuple[int, int]) -> float:
    out_features, in_features = shape
    return out_features * in_features * bits_per_weight(name, in_features) / 8


def unit_of(module: str) -> str:
    """The engine's merged unit of a checkpoint Linear: model.layers.3.self_attn.k_proj -> model.layers.3.self_attn.qkv
    (a Linear that is not merged is its own unit)."""
    parent, _, leaf = module.rpartition(".")
    return f"{parent}.{MERGED[leaf]}" if leaf in MERGED else module


def units(shapes: dict[str, tuple[int, int]]) -> dict[str, list[str]]:
    # {unit: [checkpoint Linear names]} in the order given
    out: dict[str, list[str]] = {}
    for name in shapes:
        out.setdefault(unit_of(name), []).append(name)
    return out


def scheme_bits(scheme: Scheme | None, in_features: int) -> float:
    # stored bits per weight of any scheme a plan holds (None: left in bf16), scales included
    if scheme is None:
        return 16.0
    w = scheme.weights
    if w.strategy == "group":
        return w.num_bits + SCALE_BITS / w.group_size + (4 / w.group_size if not w.symmetric else 0.0)
    return w.num_bits + (SCALE_BITS / in_features if w.strategy == "channel" else 0.0)


def candidate_of(scheme: Scheme | None) -> str:
    # the candidate name of a planned scheme (the table in the report and the card)
    if scheme is None:
        return BF16
    w = scheme.weights
    if w.num_bits == 4:
        return f"int4-g{w.group_size}" + ("" if w.symmetric else "-asym")
    return "fp8" if w.type == "float" else "int8"
