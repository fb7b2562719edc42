from pathlib import Path

from textual.widgets import Input, Select

APP = str(Path(__file__).resolve().parent / "snapshot_app.py")
SIZE = (100, 30)


async def _quantize(pilot):
    await pilot.press("f2")
    pilot.app.screen.query_one("#recipe", Select).value = "w4a16-gptq"
    await pilot.pause()
    pilot.app.screen.query_one("#samples", Input).value = "8"
    await pilot.press("ctrl+r")
    await pilot.app.workers.wait_for_complete()
    await _settle(pilot)


async def _settle(pilot) -> None:
    # the worker's last messages, the log's scroll to its end and the progress panel's refresh all land after the
    # worker completes: let them finish so the screenshot is the final state, not one of the steps before it
    for _ in range(4):
        await pilot.pause(0.05)
    await pilot.wait_for_scheduled_animations()


ARTIFACT = "/home/user/.cache/kvant/artifacts/smollm2-135m-w4a16-gptq"


async def _run_form(pilot, screen_key: str, fields: dict[str, str]):
    # open a screen, fill its inputs, run it and wait for its worker
    await pilot.press(screen_key)
    for selector, value in fields.items():
        pilot.app.screen.query_one(selector, Input).value = value
    await pilot.press("ctrl+r")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def _evaluate(pilot):
    await _run_form(pilot, "f3", {"#artifact": ARTIFACT, "#limit": "50"})


async def _serve(pilot):
    await pilot.press("f4")
    screen = pilot.app.screen
    screen.poll_timer.pause()  # polls come from the loop below only, so the sparkline is deterministic
    screen.query_one("#artifact", Input).value = ARTIFACT
    screen.query_one("#port", Input).value = "8000"
    await pilot.press("ctrl+s")
    await pilot.app.workers.wait_for_complete()
    for _ in range(6):
        screen._tick()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def _chat(pilot):
    await _serve(pilot)
    await pilot.press("f5")
    await pilot.press(*"What is paged attention?", "enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def _push(pilot):
    await _run_form(pilot, "f6", {"#artifact": ARTIFACT, "#repo": "me/smollm2-135m-w4a16"})


async def _artifacts(pilot):
    await pilot.press("f7")
    await pilot.app.workers.wait_for_complete()
    await pilot.press("down")
    await _settle(pilot)


def test_models(snap_compare):
    assert snap_compare(APP, terminal_size=SIZE)


def test_quantize(snap_compare):
    assert snap_compare(APP, terminal_size=SIZE, run_before=_quantize)


def test_evaluate(snap_compare):
    assert snap_compare(APP, terminal_size=SIZE, run_before=_evaluate)


def test_serve(snap_compare):
    assert snap_compare(APP, terminal_size=SIZE, run_before=_serve)


def test_chat(snap_compare):
    assert snap_compare(APP, terminal_size=SIZE, run_before=_chat)


def test_push(snap_compare):
    assert snap_compare(APP, terminal_size=SIZE, run_before=_push)


def test_artifacts(snap_compare):
    # the artifact list: base, scheme, size, bits per weight, gate and checksums, with Evaluate / Serve / Push
    assert snap_compare(APP, terminal_size=SIZE, run_before=_artifacts)
