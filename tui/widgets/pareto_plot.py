"""The auto search's points as a small text plot: bits per weight (x) against the gate's quality measure (y), the
gate as a dashed line, passed points green, failed red, the chosen one marked."""
from rich.text import Text
from textual.widgets import Static

from kvant.tui.services import ParetoSummary

PASS, FAIL, CHOSEN, GATE = "●", "✗", "◉", "╌"


def _cell(v: float, lo: float, hi: float, n: int) -> int:
    return 0 if hi <= lo else min(n - 1, max(0, round((v - lo) / (hi - lo) * (n - 1))))


def pareto_text(pareto: ParetoSummary, width: int = 48, height: int = 7) -> Text:
    points = [p for p in pareto.points if p.quality is not None]
    xs = [p.bits_per_weight for p in pareto.points]
    x0, x1 = min(xs), max(xs)
    if x1 - x0 < 1.0:  # one point, or points close together: a 1-bit-wide window around them
        x0, x1 = (x0 + x1) / 2 - 0.5, (x0 + x1) / 2 + 0.5
    ys = [p.quality for p in points] + [pareto.gate]
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 0.02:
        y0, y1 = y0 - 0.01, y1 + 0.01
    grid = [[" "] * width for _ in range(height)]
    styles = [[None] * width for _ in range(height)]
    gate_row = height - 1 - _cell(pareto.gate, y0, y1, height)
    grid[gate_row] = [GATE] * width
    styles[gate_row] = ["yellow"] * width
    for p in sorted(points, key=lambda p: p.chosen):  # the chosen point drawn last, on top
        r, c = height - 1 - _cell(p.quality, y0, y1, height), _cell(p.bits_per_weight, x0, x1, width)
        grid[r][c] = CHOSEN if p.chosen else PASS if p.passed else FAIL
        styles[r][c] = "bold green" if p.passed else "bold red"
    labels = {0: f"{y1:.3f}", gate_row: f"{pareto.gate:.3f}", height - 1: f"{y0:.3f}"}
    text = Text(f"{pareto.quality_name} against bits per weight ({PASS} pass, {FAIL} fail, {CHOSEN} chosen, "
                f"{GATE} gate)\n", style="bold")
    for r in range(height):
        text.append(f"{labels.get(r, ''):>6} ┤")
        for c in range(width):
            text.append(grid[r][c], style=styles[r][c])
        text.append("\n")
    text.append(" " * 7 + "└" + "─" * width + "\n")
    left, right = f"{x0:.2f}", f"{x1:.2f}"
    text.append(" " * 8 + left + "bits per weight".center(width - len(left) - len(right)) + right)
    chosen = next((p for p in pareto.points if p.chosen), None)
    if chosen is not None:
        text.append(f"\nchosen: {chosen.bits_per_weight:.2f} bits per weight, {pareto.quality_name} "
                    f"{chosen.quality:.3f}" if chosen.quality is not None else "")
    return text


class ParetoPlot(Static):
    DEFAULT_CSS = "ParetoPlot { height: auto; padding: 0 1; }"

    def show(self, pareto: ParetoSummary | None) -> None:
        self.display = pareto is not None
        self.update(pareto_text(pareto) if pareto is not None else "")
