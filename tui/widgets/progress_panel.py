import time

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, ProgressBar


def eta_seconds(elapsed_s: float, fraction: float | None) -> float | None:
    if not fraction or fraction <= 0 or fraction >= 1:
        return None
    return elapsed_s / fraction * (1 - fraction)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes:02d}:{secs:02d}" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class ProgressPanel(Vertical):
    DEFAULT_CSS = """
    ProgressPanel { height: auto; padding: 0 1; }
    ProgressPanel #stage { width: 1fr; }
    ProgressPanel #detail { color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._started: float | None = None

    def compose(self) -> ComposeResult:
        yield Label("idle", id="stage")
        yield ProgressBar(total=1.0, show_eta=False)
        yield Label("", id="detail")

    def start(self, stage: str) -> None:
        self._started = time.monotonic()
        self.update(stage, 0.0, None)

    def update(self, stage: str, fraction: float | None, memory_mib: float | None) -> None:
        self.query_one("#stage", Label).update(stage)
        bar = self.query_one(ProgressBar)
        bar.update(total=None if fraction is None else 1.0, progress=fraction or 0.0)
        elapsed = time.monotonic() - self._started if self._started is not None else 0.0
        parts = [f"elapsed {format_duration(elapsed)}", f"ETA {format_duration(eta_seconds(elapsed, fraction))}"]
        if memory_mib is not None:
            parts.append(f"RSS {memory_mib:,.0f} MiB")
        self.query_one("#detail", Label).update("  ".join(parts))

    def finish(self, stage: str) -> None:
        self.query_one("#stage", Label).update(stage)
        self.query_one(ProgressBar).update(total=1.0, progress=1.0)
