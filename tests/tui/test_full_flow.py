"""The whole TUI flow on the default model with the REAL services: quantize → evaluate → serve → chat → push."""
import asyncio
import os
import importlib.util
from pathlib import Path

import pytest
from textual.widgets import Input, Label, Log, Select, Switch, TextArea

from kvant.tui.app import make_app
from kvant.tui.messages import ChatDelta
from kvant.tui.widgets.chat_log import ChatMessage
from kvant.tui.widgets.recovery_table import RecoveryTable

QUANTIZE_MISSING = importlib.util.find_spec("kvant.quantize.api") is None
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.xfail(QUANTIZE_MISSING, strict=True, raises=AssertionError,
                      reason="kvant.quantize.api.quantize is not in this build yet"),
]
TASK = "kvant_arc_easy"
# KVANT_TUI_SCREENSHOTS=docs/screenshots makes this test export the README's screenshots of each step
SHOTS = os.environ.get("KVANT_TUI_SCREENSHOTS")


def shoot(app, name: str) -> None:
    if SHOTS:
        app.save_screenshot(f"{name}.svg", path=SHOTS)


async def settle(pilot, seconds: float) -> None:
    # serve's stats timer keeps starting workers, so wait for the named group rather than for all workers
    app = pilot.app
    for _ in range(int(seconds / 0.2)):
        busy = [w for w in app.screen.workers if w.group != "stats" and not w.is_finished]
        if not busy:
            break
        await asyncio.sleep(0.2)
    await pilot.pause()


def text_of(widget) -> str:
    return str(widget.render())


async def test_full_flow_on_default_model(default_model, shared_data, tiny_int4_recipe, tmp_path):
    messages = []
    app = make_app()
    out = tmp_path / "smollm2-int4"
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        # models: choose the default model's folder
        app.screen.query_one("#model-input", Input).value = str(default_model)
        await pilot.click("#use")
        await pilot.pause()
        assert app.model == str(default_model)
        shoot(app, "models")

        # quantize to int4 with a tiny calibration set
        await pilot.press("f2")
        screen = app.screen
        recipe = tiny_int4_recipe  # two decoder layers: about 2 minutes on 2 shared cores (all 30 take far longer)
        screen.query_one("#recipe-file", Input).value = str(recipe)
        screen.query_one("#recipe-file", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert screen.query_one("#recipe", Select).value == "tiny-int4"
        assert "calibration builtin · 4 samples" in text_of(screen.query_one("#recipe-info", Label))
        screen.query_one("#out", Input).value = str(out)
        await pilot.press("ctrl+r")
        await settle(pilot, 900)
        log = "\n".join(screen.query_one(Log).lines)
        assert f"done: {out}" in log, log[-2000:]
        assert (out / "kvant.json").is_file() and app.artifact == out
        shoot(app, "quantize")

        # evaluate with a tiny limit on a local task
        await pilot.press("f3")
        screen = app.screen
        assert screen.query_one("#artifact", Input).value == str(out)
        screen.query_one("#tasks", Input).value = TASK
        screen.query_one("#limit", Input).value = "2"
        screen.query_one("#data-dir", Input).value = str(shared_data)
        screen.query_one("#generative", Switch).value = False
        await pilot.press("ctrl+r")
        await settle(pilot, 600)
        table = screen.query_one(RecoveryTable)
        assert table.row_count == 1, text_of(screen.query_one("#stage", Label))
        assert "gate " in text_of(screen.query_one("#verdict", Label))
        assert (out / "eval" / "results.json").is_file()
        shoot(app, "evaluate")

        # serve the artifact
        await pilot.press("f4")
        screen = app.screen
        assert screen.query_one("#artifact", Input).value == str(out)
        await pilot.press("ctrl+s")
        await settle(pilot, 300)
        assert app.server is not None, text_of(screen.query_one("#status", Label))
        assert f"at {app.server.base_url}" in text_of(screen.query_one("#status", Label))

        # chat: streamed tokens arrive as several deltas
        await pilot.press("f5")
        screen = app.screen
        screen.query_one("#temperature", Input).value = "0"
        screen.query_one("#max-tokens", Input).value = "12"
        await pilot.press(*"Hi", "enter")
        await settle(pilot, 120)
        deltas = list({id(m): m for m in messages if isinstance(m, ChatDelta)}.values())
        reply = [m for m in screen.query(ChatMessage) if m.role == "assistant"]
        assert len(deltas) >= 2 and reply and reply[0].text == "".join(d.text for d in deltas)
        shoot(app, "chat")

        # push with dry run: the card preview, no upload
        await pilot.press("f6")
        screen = app.screen
        screen.query_one("#repo", Input).value = "kvant-test/smollm2-135m-w4a16"
        screen.query_one("#force", Switch).value = True  # a 4-item eval may miss the gate; dry run uploads nothing
        await pilot.press("ctrl+r")
        await settle(pilot, 120)
        assert "dry run: nothing uploaded" in text_of(screen.query_one("#stage", Label))
        assert "base_model" in screen.query_one("#card", TextArea).text
        shoot(app, "push")

        await pilot.press("f4")
        await asyncio.sleep(2.5)  # two stats polls after the chat
        await pilot.pause()
        shoot(app, "serve")
        await pilot.press("ctrl+t")
        await settle(pilot, 60)
        assert app.server is None
