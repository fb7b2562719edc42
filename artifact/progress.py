"""The one progress protocol and the one cancellation token of kvant's long jobs (pull, quantize, eval, push, serve
start-up), shared by the CLI's bars and the TUI's thread workers.

A job takes `progress: Progress | None` and `cancel: CancelToken | None`. It reports `progress(stage, done, total,
message)` where `stage` is a short fixed name a caller may switch on ("load", "calibrate", "quantize", "verify", ...),
`done`/`total` count the stage's units (total 0: unknown), and `message` is the line a person reads. It calls
`cancel.raise_if_cancelled(what)` at boundaries where stopping leaves nothing half-written (between layers, between
request chunks, before the artifact is renamed into place), which raises `Cancelled`, a `KvantError`.
"""
import threading
import time
from typing import Callable

from kvant.artifact.errors import KvantError

Progress = Callable[[str, int, int, str], None]  # (stage, done, total (0: unknown), message)


def silent(stage: str, done: int, total: int, message: str = "") -> None:
    pass


def fraction(done: int, total: int) -> float | None:
    return done / total if total > 0 else None


def eta_message(unit: str, done: int, total: int, started: float) -> str:
    # "layer 3/30 (ETA 41s)": the remaining units at the mean pace so far (`started` from time.monotonic())
    eta = (time.monotonic() - started) / max(done, 1) * (total - done)
    return f"{unit} {done}/{total} (ETA {eta:.0f}s)"


class Cancelled(KvantError):
    pass


class CancelToken:
    """Set once, from any thread; read by the job at its safe boundaries. Wraps a `threading.Event`, so a Textual
    worker's `cancelled_event` can back it."""
    __slots__ = ("_event",)

    def __init__(self, event: threading.Event | None = None):
        self._event = event if event is not None else threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self, what: str) -> None:
        if self._event.is_set():
            raise Cancelled(f"{what} cancelled")

    def wait(self, timeout: float) -> bool:
        # sleep up to `timeout` seconds, waking early on cancel; returns `cancelled`
        return self._event.wait(timeout)
