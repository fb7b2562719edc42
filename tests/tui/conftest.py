import sys
from pathlib import Path

import pytest
from textual.widgets import Input, TextArea

# snapshot_app.py is loaded by path; it and the tests import the fakes as a top-level module
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tui_fakes import FakeServices  # noqa: E402


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch):
    # a blinking cursor makes snapshots depend on timing
    monkeypatch.setattr(Input, "cursor_blink", False)
    monkeypatch.setattr(TextArea, "cursor_blink", False)


@pytest.fixture
def fake(tmp_path) -> FakeServices:
    return FakeServices(tmp_path)
