from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Label, Switch

from kvant.tui.messages import JobStopped, Progress
from kvant.tui.screens.base import KvantScreen, cancel_token
from kvant.tui.services import EvalSummary
from kvant.tui.widgets.pareto_plot import ParetoPlot
from kvant.tui.widgets.progress_panel import ProgressPanel
from kvant.tui.widgets.recovery_bars import RecoveryBars
from kvant.tui.widgets.recovery_table import RecoveryTable

def verdict_text(summary: EvalSummary) -> str:
    verdict = "PASSED" if summary.passed else "FAILED"
    ppl = f" · perplexity ratio {summary.perplexity_ratio:.3f}" if summary.perplexity_ratio is not None else ""
    limit = f" · limit {summary.limit}" if summary.limit is not None else ""
    return f"gate {verdict}: min recovery {summary.min_recovery:.0%}{limit}{ppl}"


class EvaluateScreen(KvantScreen):
    TITLE = "Evaluate"
    BINDINGS = [("ctrl+r", "run", "Run"), ("escape", "cancel", "Cancel")]

    def body(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Input(placeholder="artifact folder", id="artifact")
            yield Input(placeholder="tasks (comma-separated)", id="tasks")
            yield Input(placeholder="limit", id="limit", type="integer", classes="narrow")
            yield Button("Run", id="run", variant="primary")
        with Horizontal(classes="row"):
            yield Input(placeholder="local eval data folder (empty: lm-eval's Hub datasets)", id="data-dir")
            yield Label("generative check", classes="switch-label")
            yield Switch(True, id="generative")
        yield ProgressPanel(id="progress")
        yield Label("", id="verdict", classes="banner")
        yield RecoveryTable(id="table")
        yield RecoveryBars(id="bars")
        yield ParetoPlot(id="pareto")

    def on_mount(self) -> None:
        data_dir = self.services.eval_data_dir()
        self.query_one("#data-dir", Input).value = str(data_dir) if data_dir else ""
        self.query_one("#tasks", Input).value = ",".join(self.services.default_eval_tasks(data_dir))
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        artifact = self.take_artifact()
        if artifact is not None:
            self._show(self.services.read_eval(artifact), artifact)

    def _show(self, summary: EvalSummary | None, artifact: Path | None) -> None:
        self.query_one("#pareto", ParetoPlot).show(None if artifact is None else self.services.read_pareto(artifact))
        self.query_one("#table", RecoveryTable).show(summary)
        self.query_one("#bars", RecoveryBars).show(summary)
        verdict = self.query_one("#verdict", Label)
        verdict.update("" if summary is None else verdict_text(summary))
        verdict.set_class(summary is not None and summary.passed, "pass")
        verdict.set_class(summary is not None and not summary.passed, "fail")

    @on(Button.Pressed, "#run")
    def action_run(self) -> None:
        artifact = self.query_one("#artifact", Input).value.strip()
        tasks = [t.strip() for t in self.query_one("#tasks", Input).value.split(",") if t.strip()]
        limit_text = self.query_one("#limit", Input).value.strip()
        if not artifact or not tasks:
            self.notify("give an artifact folder and at least one task", severity="warning")
            return
        limit = int(limit_text) if limit_text else None
        if limit is not None and limit < 1:
            self.notify("limit must be at least 1", severity="warning")
            return
        data_text = self.query_one("#data-dir", Input).value.strip()
        generative = self.query_one("#generative", Switch).value
        self.query_one("#run", Button).disabled = True
        self.query_one("#progress", ProgressPanel).start(f"evaluating {Path(artifact).name} on {', '.join(tasks)}")
        self.evaluate(Path(artifact).expanduser(), tasks, limit, Path(data_text).expanduser() if data_text else None,
                      generative)

    def action_cancel(self) -> None:
        self.workers.cancel_group(self, "eval")

    @work(thread=True, exclusive=True, exit_on_error=False, group="eval")
    def evaluate(self, artifact: Path, tasks: list[str], limit: int | None, data_dir: Path | None,
                 generative: bool) -> EvalSummary:
        try:
            return self.services.evaluate(artifact, tasks, limit, data_dir, generative, self.reporter("eval"),
                                          cancel_token())
        finally:
            self.post_message(JobStopped("eval"))

    @on(JobStopped)
    def _stopped(self) -> None:
        self.query_one("#run", Button).disabled = False

    @on(Progress)
    def _progress(self, event: Progress) -> None:
        self.query_one("#progress", ProgressPanel).update(event.stage, event.fraction, self.services.memory_mib())

    def job_done(self, group: str, result: object) -> None:
        self.query_one("#progress", ProgressPanel).finish("evaluation finished")
        self._show(result, Path(self.query_one("#artifact", Input).value.strip()).expanduser())

    def job_failed(self, group: str, message: str) -> None:
        self.query_one("#progress", ProgressPanel).finish(f"evaluation {message}")
