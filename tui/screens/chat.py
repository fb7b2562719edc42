from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Label

from kvant.tui.messages import ChatDelta
from kvant.tui.screens.base import KvantScreen, cancel_token
from kvant.tui.services import ServerHandle
from kvant.tui.widgets.chat_log import ChatLog, ChatMessage


def parse_settings(temperature: str, max_tokens: str) -> tuple[float, int]:
    try:
        temp = float(temperature or "0.7")
        tokens = int(max_tokens or "128")
    except ValueError as exc:
        raise ValueError(f"temperature must be a number and max tokens an integer: {exc}") from exc
    if not 0.0 <= temp <= 2.0:
        raise ValueError(f"temperature must be in [0, 2], got {temp}")
    if tokens < 1:
        raise ValueError(f"max tokens must be at least 1, got {tokens}")
    return temp, tokens


class ChatScreen(KvantScreen):
    TITLE = "Chat"
    BINDINGS = [("escape", "stop", "Stop"), ("ctrl+l", "clear", "Clear")]

    def body(self) -> ComposeResult:
        yield Label("no server: start one on the Serve screen", id="server", classes="banner")
        yield ChatLog(id="log")
        with Horizontal(classes="row"):
            yield Input(placeholder="message (enter to send)", id="prompt")
            yield Input("0.7", placeholder="temperature", id="temperature", classes="narrow")
            yield Input("128", placeholder="max tokens", id="max-tokens", type="integer", classes="narrow")
            yield Button("Send", id="send", variant="primary")

    def on_mount(self) -> None:
        self._history: list[dict] = []
        self._reply: ChatMessage | None = None
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        handle: ServerHandle | None = self.app.server
        label = f"chatting with {handle.model_name} at {handle.base_url}" if handle else \
            "no server: start one on the Serve screen"
        self.query_one("#server", Label).update(label)
        self.query_one("#prompt", Input).focus()

    @on(Input.Submitted, "#prompt")
    @on(Button.Pressed, "#send")
    def send(self) -> None:
        prompt = self.query_one("#prompt", Input)
        text = prompt.value.strip()
        if not text:
            return
        if self.app.server is None:
            self.notify("start a server on the Serve screen first", severity="warning")
            return
        try:
            temperature, max_tokens = parse_settings(self.query_one("#temperature", Input).value.strip(),
                                                     self.query_one("#max-tokens", Input).value.strip())
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        prompt.value = ""
        log = self.query_one(ChatLog)
        log.add("user", text)
        self._history.append({"role": "user", "content": text})
        self._reply = log.add("assistant", "")
        self.query_one("#send", Button).disabled = True
        self.stream(self.app.server, list(self._history), temperature, max_tokens)

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat")
    def stream(self, handle: ServerHandle, messages: list[dict], temperature: float, max_tokens: int) -> None:
        for delta in self.services.chat_stream(handle, messages, temperature, max_tokens, cancel_token()):
            self.post_message(ChatDelta(delta))

    @on(ChatDelta)
    def _delta(self, event: ChatDelta) -> None:
        if self._reply is not None:
            self._reply.append(event.text)
            self.query_one(ChatLog).scroll_end(animate=False)

    def action_stop(self) -> None:
        self.workers.cancel_group(self, "chat")

    def action_clear(self) -> None:
        self._history.clear()
        self.query_one(ChatLog).remove_children()

    def job_done(self, group: str, result: object) -> None:
        self._finish_reply()

    def job_failed(self, group: str, message: str) -> None:
        self._finish_reply()

    def _finish_reply(self) -> None:
        self.query_one("#send", Button).disabled = False
        if self._reply is not None and self._reply.text:
            self._history.append({"role": "assistant", "content": self._reply.text})
        self._reply = None
