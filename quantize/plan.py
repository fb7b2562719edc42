"""Which Linear layers a recipe quantizes, and with which scheme; the facts a run reports at the end."""
import logging
from dataclasses import dataclass, field

from kvant.artifact.errors import KvantError
from kvant.artifact.schemes import Scheme, fallback_group_size
from kvant.artifact.targets import is_target, matches
from kvant.quantize.candidates import candidate_of, scheme_bits, scheme_for, unit_of
from kvant.quantize.recipe import Recipe

log = logging.getLogger("kvant.quantize.calibrate")
SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


@dataclass(slots=True)
class Summary:
    time_s: float = 0.0
    peak_memory_mib: float = 0.0
    layer_errors: list[float] = field(default_factory=list)  # relative output MSE per layer (NaN when data-free)
    group_size_fallbacks: dict[str, int] = field(default_factory=dict)  # linear suffix -> group size used
    # every targeted decoder-layer Linear -> (weights, stored bits per weight incl. scales, candidate name)
    linear_bits: dict[str, tuple[int, float, str]] = field(default_factory=dict)

    def bits_per_weight(self) -> float:
        total = sum(n for n, _, _ in self.linear_bits.values())
        return sum(n * b for n, b, _ in self.linear_bits.values()) / max(total, 1)


def plan_shapes(linears: dict[str, tuple[int, int]], recipe: Recipe, summary: Summary) -> dict[str, Scheme]:
    # {module name: (out_features, in_features)} of every Linear -> {name: scheme} for each targeted decoder-layer
    # Linear; fails before any work on a bad group size
    plan, chosen = {}, {}
    for name, (out_features, in_features) in linears.items():
        if ".layers." not in name:
            continue
        if not is_target(name, recipe.targets, recipe.ignore):
            continue
        scheme = _layer_scheme(name, recipe)
        chosen.setdefault(unit_of(name), set()).add(scheme)
        if scheme is None:  # left in the checkpoint dtype (listed in the config's ignore)
            summary.linear_bits[name] = (out_features * in_features, 16.0, "bf16")
            continue
        s = scheme
        if scheme.weights.strategy == "group":
            g = fallback_group_size(in_features, scheme.weights.group_size)
            if g is None:
                raise KvantError(f"{name}: input size {in_features} is divisible by neither the recipe's "
                                 f"group size {scheme.weights.group_size} nor any fallback (128, 64, 32, 16, 8); "
                                 f"add it to the recipe's ignore list")
            if g != scheme.weights.group_size:
                suffix = name.rsplit(".", 1)[-1]
                if suffix not in summary.group_size_fallbacks:
                    log.warning("%s: group_size %d does not divide input size %d; using %d", suffix,
                                scheme.weights.group_size, in_features, g)
                summary.group_size_fallbacks[suffix] = g
                s = scheme.with_group_size(g)
        if s.weights.num_bits == 4 and not s.weights.symmetric and out_features % 8:
            raise KvantError(f"{name}: asymmetric INT4 packs zero points 8 rows per word; {out_features} rows")
        plan[name] = s
        summary.linear_bits[name] = (out_features * in_features, scheme_bits(s, in_features), candidate_of(s))
    for unit, schemes in chosen.items():
        if len(schemes) > 1:
            raise KvantError(f"layer_schemes give the parts of {unit} different schemes; the engine merges them into "
                             "one layer (q/k/v_proj, gate/up_proj): give them one")
    if not plan:
        raise KvantError("the recipe's targets/ignore select no Linear layer")
    return plan


def _layer_scheme(name: str, recipe: Recipe) -> Scheme | None:
    # the first layer_schemes entry naming `name`, its unit (model.layers.0.self_attn.qkv) or a pattern matching it
    # (None for bf16), else the recipe's scheme
    unit = unit_of(name)
    for pattern, candidate in recipe.layer_schemes:
        if pattern == unit or matches(name, [pattern]):
            return scheme_for(candidate)
    return recipe.quant_scheme
