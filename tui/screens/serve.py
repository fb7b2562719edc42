from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal
from textual.widgets import Button, Input, Label

from kvant.artifact.errors import KvantError
from kvant.tui.messages import ServerChanged
from kvant.tui.screens.base import KvantScreen, cancel_token
from kvant.tui.services import ServerHandle, ServerStats
from kvant.tui.widgets.kv_usage_bar import KVUsageBar
from kvant.tui.widgets.sparkline_panel import SparklinePanel

POLL_S = 1.0


def tokens_per_s(previous: tuple[float, float] | None, now_s: float, total: float) -> float:
    if previous is None or now_s <= previous[0]:
        return 0.0
    return max(total - previous[1], 0.0) / (now_s - previous[0])


def ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:,.1f} ms"


class ServeScreen(KvantScreen):
    TITLE = "Serve"
    BINDINGS = [("ctrl+s", "start", "Start"), ("ctrl+t", "stop", "Stop")]

    def body(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Input(placeholder="artifact or model folder", id="artifact")
            yield Input(placeholder="port (0 = any)", id="port", type="integer", classes="narrow")
            yield Button("Start", id="start", variant="success")
            yield Button("Stop", id="stop", variant="error", disabled=True)
        yield Label("server stopped", id="status", classes="banner")
        yield KVUsageBar(id="kv")
        with Grid(id="stats"):
            yield Label("running –", id="running")
            yield Label("waiting –", id="waiting")
            yield Label("prefix hit –", id="prefix")
            yield Label("TTFT –", id="ttft")
            yield Label("TPOT –", id="tpot")
            yield Label("", id="model-name")
        yield SparklinePanel("generation throughput", "tok/s", id="throughput")

    def on_mount(self) -> None:
        self._handle: ServerHandle | None = None
        self._last: tuple[float, float] | None = None  # (monotonic s, generation tokens total)
        self.poll_timer = self.set_interval(POLL_S, self._tick)
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        field = self.query_one("#artifact", Input)
        if self.take_artifact() is None and not field.value:
            field.value = self.app.model

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        if self._handle is not None:
            self.notify("the server is already running", severity="warning")
            return
        target = self.query_one("#artifact", Input).value.strip()
        port_text = self.query_one("#port", Input).value.strip()
        if not target:
            self.notify("give an artifact or model folder", severity="warning")
            return
        self.query_one("#start", Button).disabled = True
        self.query_one("#status", Label).update(f"starting kvant serve {target} …")
        self.start(target, int(port_text) if port_text else 0)

    @work(thread=True, exclusive=True, exit_on_error=False, group="serve")
    def start(self, target: str, port: int) -> ServerHandle:
        path = self.services.resolve_model(target)
        return self.services.start_server(Path(path), port, cancel_token())

    @on(Button.Pressed, "#stop")
    def action_stop(self) -> None:
        if self._handle is None:
            return
        self.query_one("#stop", Button).disabled = True
        self.query_one("#status", Label).update("stopping …")
        self.stop(self._handle)

    @work(thread=True, exclusive=True, exit_on_error=False, group="serve-stop")
    def stop(self, handle: ServerHandle) -> None:
        self.services.stop_server(handle)

    def _tick(self) -> None:
        if self._handle is None:
            return
        if not self._handle.alive():
            code = self._handle.process.returncode
            self._set_handle(None)
            self.query_one("#status", Label).update(f"server exited with code {code}")
            return
        self.poll(self._handle)

    @work(thread=True, exclusive=True, exit_on_error=False, group="stats")
    def poll(self, handle: ServerHandle) -> ServerStats | None:
        try:
            return self.services.server_stats(handle)
        except KvantError:
            return None  # a missed poll shows as stale numbers, not an error dialog each second

    def _show_stats(self, stats: ServerStats) -> None:
        now = self.services.now()
        rate = tokens_per_s(self._last, now, stats.generation_tokens_total)
        if self._last is not None:
            self.query_one("#throughput", SparklinePanel).push(rate)
        self._last = (now, stats.generation_tokens_total)
        self.query_one("#kv", KVUsageBar).show(stats.kv_cache_usage)
        self.query_one("#running", Label).update(f"running {stats.num_running}")
        self.query_one("#waiting", Label).update(f"waiting {stats.num_waiting}")
        hit = "–" if stats.prefix_cache_hit_rate is None else f"{stats.prefix_cache_hit_rate:.1%}"
        self.query_one("#prefix", Label).update(f"prefix hit {hit}")
        self.query_one("#ttft", Label).update(f"TTFT {ms(stats.ttft_s)}")
        self.query_one("#tpot", Label).update(f"TPOT {ms(stats.tpot_s)}")

    def _set_handle(self, handle: ServerHandle | None) -> None:
        self._handle = handle
        self._last = None
        self.post_message(ServerChanged(handle))
        self.query_one("#start", Button).disabled = handle is not None
        self.query_one("#stop", Button).disabled = handle is None
        status = f"serving {handle.model_name} at {handle.base_url}" if handle else "server stopped"
        self.query_one("#status", Label).update(status)
        self.query_one("#status", Label).set_class(handle is not None, "pass")
        self.query_one("#model-name", Label).update(f"model id {handle.model_name}" if handle else "")

    def job_done(self, group: str, result: object) -> None:
        if group == "serve":
            self._set_handle(result)
        elif group == "serve-stop":
            self._set_handle(None)
            self.query_one("#throughput", SparklinePanel).clear()
        elif group == "stats" and result is not None:
            self._show_stats(result)

    def job_failed(self, group: str, message: str) -> None:
        if group == "serve":
            self._set_handle(None)
            self.query_one("#status", Label).update(f"server failed: {message}")
        elif group == "serve-stop":
            self._set_handle(None)
