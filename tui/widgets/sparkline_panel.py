from collections import deque

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline


class SparklinePanel(Vertical):
    DEFAULT_CSS = """
    SparklinePanel { height: 6; border: round $primary-muted; padding: 0 1; }
    SparklinePanel Sparkline { height: 1fr; }
    SparklinePanel Label { height: 1; }
    """

    def __init__(self, title: str, unit: str, *, points: int = 60, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = title
        self._unit = unit
        self._values: deque[float] = deque(maxlen=points)

    def compose(self) -> ComposeResult:
        yield Sparkline([], summary_function=max)
        yield Label("–", classes="value")

    def push(self, value: float) -> None:
        self._values.append(value)
        self.query_one(Sparkline).data = list(self._values)
        self.query_one(Label).update(f"{value:,.1f} {self._unit}  (peak {max(self._values):,.1f})")

    def clear(self) -> None:
        self._values.clear()
        self.query_one(Sparkline).data = []
        self.query_one(Label).update("–")
