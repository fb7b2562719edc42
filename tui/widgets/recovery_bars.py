from rich.text import Text
from textual.widgets import Static

from kvant.tui.services import EvalSummary

BAR_FLOOR = 0.8  # recovery below 80 % draws as an empty bar: the gates sit between 0.96 and 0.99


def recovery_bar(recovery: float, gate: float, width: int) -> Text:
    """A horizontal bar over [BAR_FLOOR, 1.0]; the gate is a '│' mark; red when under the gate."""
    span = 1.0 - BAR_FLOOR
    filled = round(min(max(recovery - BAR_FLOOR, 0.0), span) / span * width)
    gate_at = min(round((gate - BAR_FLOOR) / span * width), width - 1)
    style = "green" if recovery >= gate else "red"
    text = Text()
    for i in range(width):
        if i == gate_at:
            text.append("│", style="bold yellow")
        else:
            text.append("█" if i < filled else "░", style=style if i < filled else "grey37")
    return text


class RecoveryBars(Static):
    DEFAULT_CSS = "RecoveryBars { height: auto; padding: 0 1; }"

    def show(self, summary: EvalSummary | None, width: int = 40) -> None:
        if summary is None or not summary.rows:
            self.update("no evaluation results yet")
            return
        name_width = max(len(r.task) for r in summary.rows)
        text = Text(f"recovery per task ({BAR_FLOOR:.0%}…100%, │ = gate {summary.min_recovery:.0%})\n", style="bold")
        for row in summary.rows:
            text.append(f"{row.task:<{name_width}} ")
            text.append_text(recovery_bar(row.recovery, summary.min_recovery, width))
            text.append(f" {row.recovery:6.1%}\n")
        self.update(text)
