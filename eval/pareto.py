"""The auto search's report: bits per weight against quality for every validated point, the chosen one marked, as a
small hand-written SVG (no plotting library) and as Markdown tables (points, and the per-layer choice)."""
from html import escape

from kvant.artifact.tables import layer_table, points_table

W, H, PAD = 480, 300, 48


def _scale(v: float, lo: float, hi: float, a: float, b: float) -> float:
    return a + (b - a) * ((v - lo) / (hi - lo) if hi > lo else 0.5)


def svg(trials: list[dict], gate: float, quality_name: str) -> str:
    """trials: [{"bits_per_weight", "quality", "passed"}, ...]; the chosen one has "chosen": True."""
    xs = [t["bits_per_weight"] for t in trials] or [4.0]
    ys = [t["quality"] for t in trials if t["quality"] is not None] + [gate]
    x0, x1 = min(4.0, min(xs)), max(8.0, max(xs))
    y0, y1 = min(ys) - 0.02, max(max(ys), 1.0) + 0.01
    px = lambda x: _scale(x, x0, x1, PAD, W - 16)  # noqa: E731
    py = lambda y: _scale(y, y0, y1, H - PAD, 16)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
             f'font-size="11">', f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 16}" y2="{H - PAD}" stroke="black"/>',
             f'<line x1="{PAD}" y1="16" x2="{PAD}" y2="{H - PAD}" stroke="black"/>']
    for b in range(int(x0), int(x1) + 1, 2 if x1 - x0 > 6 else 1):
        parts.append(f'<text x="{px(b):.1f}" y="{H - PAD + 14}" text-anchor="middle">{b}</text>')
    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        parts.append(f'<text x="{PAD - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    parts.append(f'<text x="{(PAD + W) / 2}" y="{H - 12}" text-anchor="middle">bits per weight (scales included)</text>')
    parts.append(f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">'
                 f'{escape(quality_name)}</text>')
    parts.append(f'<line x1="{PAD}" y1="{py(gate):.1f}" x2="{W - 16}" y2="{py(gate):.1f}" stroke="gray" '
                 f'stroke-dasharray="4 3"/><text x="{W - 18}" y="{py(gate) - 4:.1f}" text-anchor="end" '
                 f'fill="gray">gate {gate:.3g}</text>')
    done = sorted((t for t in trials if t["quality"] is not None), key=lambda t: t["bits_per_weight"])
    if len(done) > 1:
        pts = " ".join(f"{px(t['bits_per_weight']):.1f},{py(t['quality']):.1f}" for t in done)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#888"/>')
    for t in done:
        x, y = px(t["bits_per_weight"]), py(t["quality"])
        color = "#2a7" if t["passed"] else "#c33"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
        if t.get("chosen"):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="none" stroke="black" stroke-width="2"/>'
                         f'<text x="{x + 10:.1f}" y="{y - 8:.1f}">chosen {t["bits_per_weight"]:.2f} b/w</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def markdown(trials: list[dict], gate: float, quality_name: str, layer_schemes: dict[str, str]) -> str:
    return (f"## Mixed precision (kvant quantize --recipe auto)\n\n![bits per weight vs {quality_name}](pareto.svg)\n\n"
            f"Validated points (gate: {quality_name} >= {gate:.4g}):\n\n{points_table(trials, quality_name)}\n\nPer-layer choice:\n\n"
            f"{layer_table(layer_schemes)}\n")
