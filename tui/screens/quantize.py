import re
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Label, Log, Select

from kvant.artifact.errors import KvantError
from kvant.tui.messages import ArtifactReady, JobStopped, LogLine, Progress
from kvant.tui.screens.base import KvantScreen, cancel_token
from kvant.tui.services import RecipeInfo
from kvant.tui.widgets.progress_panel import ProgressPanel


def default_out(artifacts_dir: Path, model: str, recipe: str) -> Path:
    stem = re.sub(r"[^\w.-]+", "-", Path(model).name.lower()).strip("-") or "model"
    return artifacts_dir / f"{stem}-{recipe}"


class QuantizeScreen(KvantScreen):
    TITLE = "Quantize"
    BINDINGS = [("ctrl+r", "run", "Run"), ("escape", "cancel", "Cancel")]

    def body(self) -> ComposeResult:
        yield Label("", id="model", classes="banner")
        with Horizontal(classes="row"):
            yield Select([], prompt="recipe", id="recipe", allow_blank=True)
            yield Input(placeholder="or a recipe file (enter loads it)", id="recipe-file")
        yield Label("pick a recipe", id="recipe-info")
        with Horizontal(classes="row"):
            yield Input(placeholder="samples", id="samples", type="integer", classes="narrow")
            yield Input(placeholder="seq len", id="seq-len", type="integer", classes="narrow")
            yield Input(placeholder="output folder", id="out")
            yield Button("Run", id="run", variant="primary")
            yield Button("Cancel", id="cancel", variant="error", disabled=True)
        yield ProgressPanel(id="progress")
        yield Log(id="log", max_lines=2000)

    def on_mount(self) -> None:
        try:
            self._recipes = {r.name: r for r in self.services.list_recipes()}
        except KvantError as exc:
            self._recipes = {}
            self.notify(f"cannot list recipes: {exc}", severity="error")
        self._show_options()
        if not self._recipes:
            self.query_one("#recipe-info", Label).update("no recipes found in recipes/*.yaml")
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        self.query_one("#model", Label).update(f"model: {self.app.model}")

    def _show_options(self) -> None:
        self.query_one("#recipe", Select).set_options((f"{r.name}  ({r.scheme})", r.name) for r in self._recipes.values())

    @on(Input.Submitted, "#recipe-file")
    def _load_recipe_file(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        try:
            recipe = self.services.recipe_info(Path(text).expanduser())
        except (KvantError, OSError) as exc:
            self.notify(str(exc), title="recipe", severity="error")
            return
        self._recipes[recipe.name] = recipe
        self._show_options()
        self.query_one("#recipe", Select).value = recipe.name

    def _recipe(self) -> RecipeInfo | None:
        value = self.query_one("#recipe", Select).value
        return self._recipes.get(value) if isinstance(value, str) else None

    @on(Select.Changed, "#recipe")
    def _recipe_changed(self) -> None:
        recipe = self._recipe()
        if recipe is None:
            return
        samples = "?" if recipe.num_samples is None else str(recipe.num_samples)
        self.query_one("#recipe-info", Label).update(
            f"{recipe.description or recipe.name}\nscheme {recipe.scheme} · calibration {recipe.calibration_source}"
            f" · {samples} samples")
        self.query_one("#out", Input).value = str(default_out(self.services.artifacts_dir(), self.app.model, recipe.name))

    @on(Button.Pressed, "#run")
    def action_run(self) -> None:
        recipe = self._recipe()
        out_text = self.query_one("#out", Input).value.strip()
        if recipe is None or not out_text:
            self.notify("pick a recipe and an output folder first", severity="warning")
            return
        num_samples, seq_len = self._optional_int("#samples"), self._optional_int("#seq-len")
        if (num_samples is not None and num_samples < 1) or (seq_len is not None and seq_len < 1):
            self.notify("samples and seq len must be at least 1", severity="warning")
            return
        self.query_one(Log).clear()
        self.query_one("#progress", ProgressPanel).start(f"quantizing {self.app.model} with {recipe.name}")
        self._set_busy(True)
        self.quantize(self.app.model, recipe, Path(out_text).expanduser(), num_samples, seq_len)

    def _optional_int(self, selector: str) -> int | None:
        text = self.query_one(selector, Input).value.strip()
        return int(text) if text else None

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        for worker in self.workers:
            if worker.group == "quantize" and not worker.is_finished:
                worker.cancel()
                self.query_one(Log).write_line("cancelling at the next layer boundary…")

    @work(thread=True, exclusive=True, exit_on_error=False, group="quantize")
    def quantize(self, model: str, recipe: RecipeInfo, out: Path, num_samples: int | None, seq_len: int | None) -> Path:
        self.post_message(LogLine("quantize", f"recipe {recipe.path}, output {out}"))
        try:
            return self.services.quantize(model, recipe, out, num_samples, seq_len, self.reporter("quantize"),
                                          cancel_token())
        finally:
            self.post_message(JobStopped("quantize"))

    def _set_busy(self, running: bool) -> None:
        self.query_one("#run", Button).disabled = running
        self.query_one("#cancel", Button).disabled = not running

    @on(Progress)
    def _progress(self, event: Progress) -> None:
        self.query_one("#progress", ProgressPanel).update(event.stage, event.fraction, self.services.memory_mib())
        self.query_one(Log).write_line(event.stage if event.fraction is None else f"{event.fraction:6.1%}  {event.stage}")

    @on(JobStopped)
    def _stopped(self) -> None:
        self._set_busy(False)

    @on(LogLine)
    def _log(self, event: LogLine) -> None:
        self.query_one(Log).write_line(event.text)

    def job_done(self, group: str, result: object) -> None:
        self.query_one("#progress", ProgressPanel).finish(f"wrote {result}")
        self.query_one(Log).write_line(f"done: {result}")
        self.post_message(ArtifactReady(Path(str(result))))

    def job_failed(self, group: str, message: str) -> None:
        # Run stays disabled until JobStopped: a cancelled thread finishes its layer and removes its temp folder first
        self.query_one("#progress", ProgressPanel).finish(f"quantize {message}")
        self.query_one(Log).write_line(f"stopped: {message}")
