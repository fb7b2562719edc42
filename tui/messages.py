from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from kvant.tui.services import ServerHandle


@dataclass
class Progress(Message):
    job: str  # worker group: "pull", "quantize", "eval", "push"
    stage: str
    fraction: float | None  # [0, 1], None while unknown

    def can_replace(self, message: Message) -> bool:
        # a burst of updates for one job coalesces into the newest
        return isinstance(message, Progress) and message.job == self.job


@dataclass
class LogLine(Message):
    job: str
    text: str


@dataclass
class ChatDelta(Message):
    text: str


@dataclass
class ModelChosen(Message):
    model: str  # short name, local folder or Hub id


@dataclass
class ArtifactReady(Message):
    path: Path


@dataclass
class ServerChanged(Message):
    handle: ServerHandle | None  # None once stopped


@dataclass
class JobStopped(Message):
    # posted by the worker thread itself as it returns: a cancelled worker's thread may outlive its state change
    job: str


@dataclass
class TargetChosen(Message):
    # an artifact picked on the artifact list for one area ("evaluate", "serve", "push") to work on
    path: Path
    area: str
