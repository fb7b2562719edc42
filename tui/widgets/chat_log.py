from textual.containers import VerticalScroll
from textual.widgets import Static


class ChatMessage(Static):
    def __init__(self, role: str, text: str) -> None:
        super().__init__(text, classes=f"chat-{role}", markup=False)
        self.role = role
        self.text = text
        self.border_title = role

    def append(self, delta: str) -> None:
        self.text += delta
        self.update(self.text)


class ChatLog(VerticalScroll):
    DEFAULT_CSS = """
    ChatLog ChatMessage { border: round $primary-muted; padding: 0 1; height: auto; }
    ChatLog .chat-assistant { border: round $accent; }
    """

    def add(self, role: str, text: str) -> ChatMessage:
        message = ChatMessage(role, text)
        self.mount(message)
        self.scroll_end(animate=False)
        return message
