from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Input
from textual.worker import Worker, WorkerState

from kvant.tui.messages import Progress
from kvant.artifact.progress import CancelToken, Progress as ProgressFn, fraction
from kvant.tui.services import Services


class KvantScreen(Screen):
    """A top-level area: Header, the screen's body, Footer; worker outcomes routed to three hooks."""

    @property
    def services(self) -> Services:
        return self.app.services

    def compose(self) -> ComposeResult:
        yield Header()
        yield from self.body()
        # compact and without the palette entry (ctrl+p still opens it): every area key and ^q fit in 100 columns
        yield Footer(compact=True, show_command_palette=False)

    def body(self) -> ComposeResult:
        raise NotImplementedError(f"{type(self).__name__} must define body()")

    def take_artifact(self, field_id: str = "#artifact") -> Path | None:
        """Put the app's artifact into the screen's target field when it changed since this screen last took it (a
        new one from Quantize, or one picked on the artifact list); a value the user typed stays otherwise."""
        artifact: Path | None = self.app.artifact
        if artifact is None or artifact == getattr(self, "_taken", None):
            return None
        self._taken = artifact
        self.query_one(field_id, Input).value = str(artifact)
        return artifact

    def reporter(self, job: str) -> ProgressFn:
        # the core's progress callback, called from worker threads (post_message is thread-safe)
        def report(stage: str, done: int, total: int, message: str = "") -> None:
            self.post_message(Progress(job, message or stage, fraction(done, total)))
        return report

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker, group = event.worker, event.worker.group
        if event.state == WorkerState.SUCCESS:
            self.job_done(group, worker.result)
        elif event.state == WorkerState.ERROR:
            message = " ".join(str(worker.error).split()) or type(worker.error).__name__
            self.notify(message, title=f"{group} failed", severity="error", timeout=10)
            self.job_failed(group, message)
        elif event.state == WorkerState.CANCELLED:
            self.job_failed(group, "cancelled")

    def job_done(self, group: str, result: object) -> None:
        pass

    def job_failed(self, group: str, message: str) -> None:
        pass


def cancel_token() -> CancelToken:
    # the running worker's: Worker.cancel() sets the event it wraps
    from textual.worker import get_current_worker

    return CancelToken(get_current_worker().cancelled_event)
