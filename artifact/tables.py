"""Markdown tables of a mixed-precision artifact, shared by the eval report and the model card: the validated points
of the auto search (bits per weight against quality) and the per-layer choice."""
from collections import Counter


def points_table(trials: list[dict], quality_name: str) -> str:
    rows = ["| bits/weight | predicted KL | " + quality_name + " | gate |", "|---|---|---|---|"]
    for t in sorted(trials, key=lambda t: t["bits_per_weight"]):
        q = "n/a" if t["quality"] is None else f"{t['quality']:.4f}"
        mark = " **(chosen)**" if t.get("chosen") else ""
        rows.append(f"| {t['bits_per_weight']:.3f}{mark} | {t['predicted_kl']:.4f} | {q} | "
                    f"{'pass' if t['passed'] else 'FAIL'} |")
    return "\n".join(rows)


def layer_table(layer_schemes: dict[str, str]) -> str:
    """One row per decoder layer, one column per unit (qkv, o_proj, gate_up, down_proj), then the totals."""
    by_layer: dict[int, dict[str, str]] = {}
    for unit, cand in layer_schemes.items():
        parts = unit.split(".")
        by_layer.setdefault(int(parts[2]), {})[parts[-1]] = cand
    cols = [c for c in ("qkv", "o_proj", "gate_up", "down_proj") if any(c in r for r in by_layer.values())]
    rows = ["| layer | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for i in sorted(by_layer):
        rows.append(f"| {i} | " + " | ".join(by_layer[i].get(c, "-") for c in cols) + " |")
    counts = Counter(layer_schemes.values())
    rows.append("\nUnits per scheme: " + ", ".join(f"{c} {n}" for c, n in sorted(counts.items())))
    return "\n".join(rows)
