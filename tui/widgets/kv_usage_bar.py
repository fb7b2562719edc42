from rich.text import Text
from textual.widgets import Static


def usage_bar(usage: float, width: int) -> Text:
    usage = min(max(usage, 0.0), 1.0)
    filled = round(usage * width)
    style = "green" if usage < 0.7 else "yellow" if usage < 0.9 else "red"
    text = Text("KV cache ")
    text.append("█" * filled, style=style)
    text.append("░" * (width - filled), style="grey37")
    text.append(f" {usage:5.1%}")
    return text


class KVUsageBar(Static):
    DEFAULT_CSS = "KVUsageBar { height: 1; padding: 0 1; }"

    def on_mount(self) -> None:
        self.show(0.0)

    def show(self, usage: float, width: int = 30) -> None:
        self.update(usage_bar(usage, width))
