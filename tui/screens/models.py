from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Input, Label

from kvant.tui.messages import ModelChosen, Progress
from kvant.tui.screens.base import KvantScreen, cancel_token
from kvant.tui.widgets.progress_panel import ProgressPanel


class ModelsScreen(KvantScreen):
    TITLE = "Models"
    BINDINGS = [("p", "pull", "Pull"), ("r", "refresh", "Refresh")]

    def body(self) -> ComposeResult:
        yield Label("", id="selected", classes="banner")
        yield DataTable(id="models", cursor_type="row")
        with Horizontal(classes="row"):
            yield Input(placeholder="local folder or Hub id (org/name)", id="model-input")
            yield Button("Use", id="use", variant="primary")
            yield Button("Pull default", id="pull")
        yield ProgressPanel(id="progress")

    def on_mount(self) -> None:
        self.query_one("#models", DataTable).add_columns("name", "size", "source", "path")
        self.action_refresh()
        self._show_selected()

    def on_screen_resume(self) -> None:
        self._show_selected()

    def _show_selected(self) -> None:
        self.query_one("#selected", Label).update(f"selected model: {self.app.model}")

    def action_refresh(self) -> None:
        table = self.query_one("#models", DataTable)
        table.clear()
        for m in self.services.list_models():
            table.add_row(m.name, f"{m.size_bytes / 2**20:,.0f} MiB", m.source, str(m.path), key=str(m.path))
        if not table.row_count:
            self.query_one("#progress", ProgressPanel).finish(
                f"no models cached; press p to pull {self.services.default_model()}")

    def action_pull(self) -> None:
        self.query_one("#progress", ProgressPanel).start(f"pulling {self.services.default_model()}")
        self.pull()

    @work(thread=True, exclusive=True, exit_on_error=False, group="pull")
    def pull(self) -> Path:
        return self.services.pull_default(self.reporter("pull"), cancel_token())

    @on(Progress)
    def _progress(self, event: Progress) -> None:
        self.query_one("#progress", ProgressPanel).update(event.stage, event.fraction, None)

    @on(DataTable.RowSelected, "#models")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self._choose(str(event.row_key.value))

    @on(Button.Pressed, "#use")
    @on(Input.Submitted, "#model-input")
    def _use_input(self) -> None:
        text = self.query_one("#model-input", Input).value.strip()
        if not text:
            self.notify("type a local folder or a Hub id first", severity="warning")
            return
        self._choose(text)

    @on(Button.Pressed, "#pull")
    def _pull_pressed(self) -> None:
        self.action_pull()

    def _choose(self, model: str) -> None:
        self.post_message(ModelChosen(model))
        self.query_one("#selected", Label).update(f"selected model: {model}")
        self.notify(f"selected {model}")

    def job_done(self, group: str, result: object) -> None:
        self.query_one("#progress", ProgressPanel).finish(f"pulled to {result}")
        self.action_refresh()

    def job_failed(self, group: str, message: str) -> None:
        self.query_one("#progress", ProgressPanel).finish(f"pull failed: {message}")
