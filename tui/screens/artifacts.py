from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Label

from kvant.eval.inventory import ArtifactRow
from kvant.tui.messages import ArtifactReady, TargetChosen
from kvant.tui.screens.base import KvantScreen

# `kvant models list`'s fields; base goes last here (the long one: a narrow terminal cuts it, the detail line shows it)
COLUMNS = ("artifact", "scheme", "size", "bits/w", "gate", "checksums", "base")
# button id -> the area that takes the selected artifact as its target
TARGETS = {"to-evaluate": "evaluate", "to-serve": "serve", "to-push": "push"}


def cells(row: ArtifactRow) -> tuple[str, ...]:
    """One table row; a checksum problem shows as FAILED here and in full on the detail line."""
    bits = "-" if row.bits_per_weight is None else f"{row.bits_per_weight:.2f}"
    return (row.name, row.scheme, f"{row.size_bytes / 2**20:,.0f} MiB", bits, row.gate,
            "ok" if row.checksums == "ok" else "FAILED", row.base)


def detail(row: ArtifactRow) -> str:
    checks = "checksums verify" if row.checksums == "ok" else f"checksums FAILED: {row.checksums}"
    return f"{row.path}\nbase {row.base} · {checks}"


class ArtifactsScreen(KvantScreen):
    TITLE = "Artifacts"
    # the buttons carry these keys in their labels; the footer keeps its room for the area keys and ^q
    BINDINGS = [Binding("e", "target('evaluate')", "Evaluate", show=False),
                Binding("s", "target('serve')", "Serve", show=False),
                Binding("p", "target('push')", "Push", show=False), ("r", "refresh", "Refresh")]

    def body(self) -> ComposeResult:
        yield Label("", id="where", classes="banner")
        yield DataTable(id="artifacts", cursor_type="row")
        yield Label("", id="detail", classes="banner")
        with Horizontal(classes="row"):
            yield Button("e Evaluate", id="to-evaluate", variant="primary")
            yield Button("s Serve", id="to-serve", variant="success")
            yield Button("p Push", id="to-push")

    def on_mount(self) -> None:
        self._rows: dict[str, ArtifactRow] = {}
        self.query_one("#artifacts", DataTable).add_columns(*COLUMNS)
        self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()  # a quantize or eval run since the last visit changes the list

    def action_refresh(self) -> None:
        self.query_one("#where", Label).update(f"reading artifacts under {self.services.artifacts_dir()} …")
        self.scan()

    # checksums hash every file: off the event loop
    @work(thread=True, exclusive=True, exit_on_error=False, group="scan")
    def scan(self) -> list[ArtifactRow]:
        return self.services.list_artifacts()

    def job_done(self, group: str, result: object) -> None:
        rows: list[ArtifactRow] = result
        table = self.query_one("#artifacts", DataTable)
        chosen = self.app.artifact
        table.clear()
        self._rows = {str(row.path): row for row in rows}
        self.query_one("#detail", Label).update("")
        for row in rows:
            table.add_row(*cells(row), key=str(row.path))
        root = self.services.artifacts_dir()
        self.query_one("#where", Label).update(
            f"{len(rows)} artifact{'s' * (len(rows) != 1)} under {root}" if rows else
            f"no artifacts under {root}; quantize one on the Quantize screen (f2)")
        if chosen is not None and str(chosen) in table.rows:
            table.move_cursor(row=table.get_row_index(str(chosen)))

    def job_failed(self, group: str, message: str) -> None:
        self.query_one("#where", Label).update(f"could not list artifacts: {message}")

    def selected(self) -> Path | None:
        table = self.query_one("#artifacts", DataTable)
        if not table.row_count:
            return None
        return Path(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_target(self, area: str) -> None:
        path = self.selected()
        if path is None:
            self.notify("no artifact to use: quantize one first", severity="warning")
            return
        self.post_message(TargetChosen(path, area))

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id in TARGETS:
            self.action_target(TARGETS[event.button.id])

    @on(DataTable.RowHighlighted, "#artifacts")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = self._rows.get(str(event.row_key.value))
        self.query_one("#detail", Label).update(detail(row) if row else "")

    @on(DataTable.RowSelected, "#artifacts")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        path = Path(str(event.row_key.value))
        self.post_message(ArtifactReady(path))
        self.notify(f"selected {path.name}: e evaluates, s serves, p pushes it")
