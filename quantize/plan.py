"""Which Linear layers a recipe quantizes, and with which scheme; the facts a run reports at the end."""
import logging
from dataclasses import dataclass, field

from kvant.artifact.errors import KvantError
from kvant.artifact.schemes import Scheme, fallback_group_size
from kvant.artifact.targets import is_target
from kvant.quantize.recipe import Recipe

log = logging.getLogger("kvant.quantize.calibrate")
SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


@dataclass(slots=True)
class Summary:
    time_s: float = 0.0
    peak_memory_mib: float = 0.0
    layer_errors: list[float] = field(default_factory=list)  # relative output MSE per layer (NaN when data-free)
    group_size_fallbacks: dict[str, int] = field(default_factory=dict)  # linear suffix -> group size used


def plan_shapes(linears: dict[str, tuple[int, int]], recipe: Recipe, summary: Summary) -> dict[str, Scheme]:
    # {module name: (out_features, in_features)} of every Linear -> {name: scheme} for each targeted decoder-layer
    # Linear; fails before any work on a bad group size
    scheme = recipe.quant_scheme
    plan = {}
    for name, (out_features, in_features) in linears.items():
        if ".layers." not in name:
            continue
        if not is_target(name, recipe.targets, recipe.ignore):
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
    if not plan:
        raise KvantError("the recipe's targets/ignore select no Linear layer")
    return plan
