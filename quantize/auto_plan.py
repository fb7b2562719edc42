"""From per-unit sensitivities to mixed-precision points: start every unit at its smallest candidate, then upgrade,
one unit at a time, the unit whose upgrade removes the most KL per extra weight byte (greedy by sensitivity per byte).
Every step is a point (bits per weight, predicted KL = sum of the units' KL); `levels` picks the few worth validating."""
from dataclasses import dataclass

from kvant.quantize.candidates import bits_per_weight


@dataclass(slots=True, frozen=True)
class Point:
    choice: dict  # unit -> candidate
    bits_per_weight: float  # average over the units' weights, scales included
    predicted_kl: float  # sum over units of each one's KL when quantized alone


def _unit_bytes(cand: str, shapes: list) -> float:
    return sum(o * i * bits_per_weight(cand, i) / 8 for o, i in shapes)


def greedy_path(sens: dict[str, dict[str, float]], shapes: dict[str, list]) -> list[Point]:
    """`sens`: {unit: {candidate: KL}} (a candidate a unit cannot take is absent); `shapes`: {unit: [[out, in], ...]}.
    Returns the points from the smallest artifact to the last useful upgrade, bits per weight increasing."""
    total = sum(o * i for s in shapes.values() for o, i in s)
    cost = {u: {c: _unit_bytes(c, shapes[u]) for c in cs} for u, cs in sens.items()}
    choice = {u: min(cs, key=lambda c: (cost[u][c], sens[u][c])) for u, cs in sens.items()}

    def point() -> Point:
        nbytes = sum(cost[u][c] for u, c in choice.items())
        return Point(dict(choice), 8 * nbytes / total, sum(sens[u][c] for u, c in choice.items()))

    path = [point()]
    while True:
        best, best_ratio = None, 0.0
        for u, cur in choice.items():
            for c, kl in sens[u].items():
                extra, gain = cost[u][c] - cost[u][cur], sens[u][cur] - kl
                if extra > 0 and gain > 0 and gain / extra > best_ratio:
                    best, best_ratio = (u, c), gain / extra
        if best is None:
            return path
        choice[best[0]] = best[1]
        path.append(point())


def levels(path: list[Point], budget: float | None, max_levels: int = 12) -> list[Point]:
    """The points worth validating, smallest first: the first point at or below each halving of the smallest point's
    predicted KL, and the last point, all within `budget` bits per weight."""
    within = [p for p in path if budget is None or p.bits_per_weight <= budget + 1e-9]
    if not within:
        return []
    chosen, bound = [within[0]], within[0].predicted_kl / 2
    for p in within[1:]:
        if p.predicted_kl <= bound:
            chosen.append(p)
            while p.predicted_kl <= bound and bound > 0:
                bound /= 2
        if len(chosen) == max_levels - 1:
            break
    if within[-1] is not chosen[-1]:
        chosen.append(within[-1])
    return chosen
