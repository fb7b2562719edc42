from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Label, Switch, TextArea

from kvant.engine.registry import HUB_ID_RE
from kvant.tui.messages import Progress
from kvant.tui.screens.base import KvantScreen, cancel_token
from kvant.tui.screens.confirm import ConfirmDialog
from kvant.tui.services import PushOutcome
from kvant.tui.widgets.progress_panel import ProgressPanel


class PushScreen(KvantScreen):
    TITLE = "Push"
    BINDINGS = [("ctrl+r", "push", "Push / preview")]

    def body(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Input(placeholder="artifact folder", id="artifact")
            yield Input(placeholder="repo id (user/name)", id="repo")
        with Horizontal(classes="row"):
            yield Label("private", classes="switch-label")
            yield Switch(False, id="private")
            yield Label("dry run", classes="switch-label")
            yield Switch(True, id="dry-run")
            yield Label("force", classes="switch-label")
            yield Switch(False, id="force")
            yield Button("Preview", id="push", variant="primary")
        yield ProgressPanel(id="progress")
        yield Label("model card", id="card-title", classes="banner")
        yield TextArea("", id="card", read_only=True, language="markdown", soft_wrap=True)

    def on_mount(self) -> None:
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        self.take_artifact()

    @on(Switch.Changed, "#dry-run")
    def _dry_run_changed(self, event: Switch.Changed) -> None:
        self.query_one("#push", Button).label = "Preview" if event.value else "Push"

    @on(Button.Pressed, "#push")
    def action_push(self) -> None:
        artifact = self.query_one("#artifact", Input).value.strip()
        repo_id = self.query_one("#repo", Input).value.strip()
        if not artifact or not HUB_ID_RE.match(repo_id):
            self.notify("give an artifact folder and a repo id like user/name", severity="warning")
            return
        private = self.query_one("#private", Switch).value
        dry_run = self.query_one("#dry-run", Switch).value
        force = self.query_one("#force", Switch).value
        if dry_run:
            self._begin(Path(artifact).expanduser(), repo_id, private, True, force)
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._begin(Path(artifact).expanduser(), repo_id, private, False, force)

        visibility = "private" if private else "public"
        self.app.push_screen(ConfirmDialog(f"Upload {Path(artifact).name} to {repo_id} ({visibility})?"), confirmed)

    def _begin(self, artifact: Path, repo_id: str, private: bool, dry_run: bool, force: bool) -> None:
        self.query_one("#push", Button).disabled = True
        self.query_one("#progress", ProgressPanel).start(("previewing " if dry_run else "uploading to ") + repo_id)
        self.push(artifact, repo_id, private, dry_run, force)

    @work(thread=True, exclusive=True, exit_on_error=False, group="push")
    def push(self, artifact: Path, repo_id: str, private: bool, dry_run: bool, force: bool) -> PushOutcome:
        return self.services.push(artifact, repo_id, private, dry_run, force, self.reporter("push"), cancel_token())

    @on(Progress)
    def _progress(self, event: Progress) -> None:
        self.query_one("#progress", ProgressPanel).update(event.stage, event.fraction, None)

    def job_done(self, group: str, result: object) -> None:
        outcome: PushOutcome = result
        self.query_one("#push", Button).disabled = False
        done = f"dry run: nothing uploaded ({len(outcome.files)} files)" if outcome.dry_run else f"pushed to {outcome.url}"
        self.query_one("#progress", ProgressPanel).finish(done)
        self.query_one("#card", TextArea).text = outcome.card

    def job_failed(self, group: str, message: str) -> None:
        self.query_one("#push", Button).disabled = False
        self.query_one("#progress", ProgressPanel).finish(f"push {message}")
