"""The recovery gate an artifact must pass: the manifest's `gate.min_recovery`, else its scheme's default."""
from dataclasses import dataclass

from kvant.artifact.schemes import scheme_info


@dataclass(slots=True, frozen=True)
class Gate:
    min_recovery: float  # every gated task's quantized / base score must reach this

    def __post_init__(self):
        if not 0.0 < self.min_recovery <= 1.0:
            raise ValueError(f"gate.min_recovery must be in (0, 1], got {self.min_recovery}")


def default_min_recovery(scheme: str) -> float:
    return scheme_info(scheme).min_recovery


def gate_for(manifest: dict) -> Gate:
    gate = manifest.get("gate") or {}
    if gate.get("min_recovery") is not None:
        return Gate(float(gate["min_recovery"]))
    return Gate(default_min_recovery(manifest.get("scheme")))
