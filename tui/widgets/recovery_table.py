from rich.text import Text
from textual.widgets import DataTable

from kvant.tui.services import EvalSummary

COLUMNS = ("task", "metric", "base", "quantized", "recovery", "gate")


class RecoveryTable(DataTable):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns(*COLUMNS)

    def show(self, summary: EvalSummary | None) -> None:
        self.clear()
        if summary is None:
            return
        for row in summary.rows:
            stderr = f" ±{row.recovery_stderr:.1%}" if row.recovery_stderr is not None else ""
            verdict = Text("PASS", style="bold green") if row.passed else Text("FAIL", style="bold red")
            self.add_row(row.task, row.metric, f"{row.base:.4f}", f"{row.quant:.4f}",
                         f"{row.recovery:.1%}{stderr}", verdict, key=row.task)
