from pathlib import Path

from tui_fakes import FakeServices

from kvant.tui.app import make_app

app = make_app(services=FakeServices(Path("/home/user/.cache/kvant"), write=False, report_gap=0.2))
