"""Which Linear layers a scheme applies to: compressed-tensors' `targets` / `ignore` rules, in one matcher that the
quantizer (choosing layers) and the engine (rebuilding them from `quantization_config`) share."""
import re


def matches(name: str, patterns, class_name: str = "Linear") -> bool:
    """A pattern is a class name ("Linear"), an exact module name, or "re:<regex>" matched at the name's start."""
    return any(p == class_name or p == name or (p.startswith("re:") and re.match(p[3:], name) is not None)
               for p in patterns)


def is_target(name: str, targets, ignore, class_name: str = "Linear") -> bool:
    return matches(name, targets, class_name) and not matches(name, ignore, class_name)


def group_for(name: str, quantization_config: dict, class_name: str = "Linear") -> dict | None:
    """The first config group of `quantization_config` that targets module `name` (None: left unquantized)."""
    ignore = quantization_config.get("ignore") or []
    if matches(name, ignore, class_name):
        return None
    groups = (quantization_config.get("config_groups") or {}).values()
    return next((g for g in groups if matches(name, g.get("targets") or [], class_name)), None)
