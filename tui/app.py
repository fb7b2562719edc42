from pathlib import Path

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from kvant.tui.messages import ArtifactReady, ModelChosen, ServerChanged, TargetChosen
from kvant.tui.screens.artifacts import ArtifactsScreen
from kvant.tui.screens.chat import ChatScreen
from kvant.tui.screens.evaluate import EvaluateScreen
from kvant.tui.screens.models import ModelsScreen
from kvant.tui.screens.push import PushScreen
from kvant.tui.screens.quantize import QuantizeScreen
from kvant.tui.screens.serve import ServeScreen
from kvant.tui.services import ServerHandle, Services

# mode name -> (screen class, key); the keys are function keys so that they work while an Input has focus
AREAS = {
    "models": (ModelsScreen, "f1"),
    "quantize": (QuantizeScreen, "f2"),
    "evaluate": (EvaluateScreen, "f3"),
    "serve": (ServeScreen, "f4"),
    "chat": (ChatScreen, "f5"),
    "push": (PushScreen, "f6"),
    "artifacts": (ArtifactsScreen, "f7"),
}


class KvantApp(App):
    TITLE = "kvant"
    CSS_PATH = "app.tcss"
    MODES = {name: screen for name, (screen, _) in AREAS.items()}
    DEFAULT_MODE = "models"
    # `q` is not a priority binding: a focused Input takes it as text, everywhere else it quits
    BINDINGS = [Binding(key, f"switch_mode('{name}')", name.capitalize(), priority=True)
                for name, (_, key) in AREAS.items()] + [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        # shared selection, read by screens on resume (attributes down); set only by the handlers below
        self.model: str = services.default_model()
        self.artifact: Path | None = None
        self.server: ServerHandle | None = None

    def get_system_commands(self, screen: Screen):
        yield from super().get_system_commands(screen)
        for name in AREAS:
            yield SystemCommand(f"Go to {name}", f"Open the {name} screen", lambda n=name: self.switch_mode(n))

    @on(ModelChosen)
    def _model_chosen(self, event: ModelChosen) -> None:
        self.model = event.model

    @on(ArtifactReady)
    def _artifact_ready(self, event: ArtifactReady) -> None:
        self.artifact = event.path

    @on(TargetChosen)
    def _target_chosen(self, event: TargetChosen) -> None:
        self.artifact = event.path
        self.switch_mode(event.area)

    @on(ServerChanged)
    def _server_changed(self, event: ServerChanged) -> None:
        self.server = event.handle

    def on_unmount(self) -> None:
        if self.server is not None:
            self.services.stop_server(self.server)


def make_app(services: Services | None = None) -> KvantApp:
    return KvantApp(services if services is not None else Services())
