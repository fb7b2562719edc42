from pathlib import Path

from textual.widgets import Button, DataTable, Input, Label, Log, Select, Sparkline, Switch, TextArea

from kvant.tui.app import AREAS, make_app
from kvant.tui.messages import ArtifactReady, ModelChosen, Progress, ServerChanged
from kvant.tui.screens.confirm import ConfirmDialog
from kvant.tui.widgets.chat_log import ChatMessage
from kvant.tui.widgets.recovery_table import RecoveryTable
from tui_fakes import BASE, CARD, GENERATED_PER_POLL, NUM_LAYERS, QUANT, REPLY

SIZE = (100, 30)


def unique(messages, cls) -> list:
    # message_hook sees a bubbling message once per node it reaches
    return list({id(m): m for m in messages if isinstance(m, cls)}.values())


def text_of(widget) -> str:
    return str(widget.render())


async def test_function_keys_switch_modes(fake):
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        assert app.current_mode == "models"
        for name, (screen, key) in AREAS.items():
            await pilot.press(key)
            assert app.current_mode == name
            assert isinstance(app.screen, screen)


async def test_models_lists_cache_and_pulls(fake):
    messages = []
    app = make_app(services=fake)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        table = app.screen.query_one("#models", DataTable)
        assert table.row_count == 1
        assert table.get_row_at(0)[0] == "SmolLM2-135M-Instruct"
        await pilot.press("p")
        await app.workers.wait_for_complete()
        await pilot.pause()
        stages = [m.stage for m in messages if isinstance(m, Progress) and m.job == "pull"]
        assert stages[-1] == "done"
        assert "pulled to" in text_of(app.screen.query_one("#stage", Label))
        app.screen.query_one("#model-input", Input).value = "/data/my-model"
        await pilot.click("#use")
        await pilot.pause()
        assert [m.model for m in unique(messages, ModelChosen)] == ["/data/my-model"]
        assert app.model == "/data/my-model"


async def test_quantize_runs_with_progress_and_hands_artifact_on(fake, tmp_path):
    messages = []
    app = make_app(services=fake)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await pilot.press("f2")
        screen = app.screen
        screen.query_one("#recipe", Select).value = "w4a16-gptq"
        await pilot.pause()
        assert "GPTQ" in text_of(screen.query_one("#recipe-info", Label))
        assert "256 samples" in text_of(screen.query_one("#recipe-info", Label))
        out = Path(screen.query_one("#out", Input).value)
        assert out == tmp_path / "artifacts" / "smollm2-135m-w4a16-gptq"
        screen.query_one("#samples", Input).value = "8"
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert fake.calls == [("quantize", "smollm2-135m", "w4a16-gptq", out, 8, None)]
        fractions = [m.fraction for m in messages if isinstance(m, Progress) and m.job == "quantize"]
        assert fractions[-1] == 1.0
        log = "\n".join(screen.query_one(Log).lines)
        assert f"layer {NUM_LAYERS}/{NUM_LAYERS}" in log and f"done: {out}" in log
        assert [m.path for m in unique(messages, ArtifactReady)] == [out]
        assert app.artifact == out and out.is_dir()
        assert not screen.query_one("#run", Button).disabled


async def test_quantize_loads_a_recipe_file(fake, tmp_path):
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        screen = app.screen
        screen.query_one("#recipe-file", Input).value = "/recipes/tiny-int4.yaml"
        screen.query_one("#recipe-file", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert screen.query_one("#recipe", Select).value == "tiny-int4"
        assert "a user recipe" in text_of(screen.query_one("#recipe-info", Label))
        assert screen.query_one("#out", Input).value == str(tmp_path / "artifacts" / "smollm2-135m-tiny-int4")
        screen.query_one("#recipe-file", Input).value = "/recipes/notes.txt"
        await pilot.press("enter")
        await pilot.pause()
        assert screen.query_one("#recipe", Select).value == "tiny-int4"  # a bad file leaves the choice alone


async def test_quantize_cancel_leaves_no_artifact(tmp_path):
    from tui_fakes import FakeServices

    fake = FakeServices(tmp_path, block_quantize=True)
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        screen = app.screen
        screen.query_one("#recipe", Select).value = "fp8-dynamic"
        await pilot.pause()
        await pilot.click("#run")
        assert fake.quantize_started.wait(5)
        assert screen.query_one("#run", Button).disabled
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        for _ in range(50):  # the thread posts JobStopped once its layer ends
            await pilot.pause(0.02)
            if not screen.query_one("#run", Button).disabled:
                break
        assert not screen.query_one("#run", Button).disabled
        assert "stopped: cancelled" in "\n".join(screen.query_one(Log).lines)
        assert not (tmp_path / "artifacts" / "smollm2-135m-fp8-dynamic").exists()
        assert app.artifact is None


async def test_evaluate_shows_table_bars_and_verdict(fake):
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        screen = app.screen
        screen.query_one("#artifact", Input).value = "/art/x"
        screen.query_one("#limit", Input).value = "10"
        screen.query_one("#data-dir", Input).value = "/data/eval"
        screen.query_one("#generative", Switch).value = False
        await pilot.click("#run")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert fake.calls == [("evaluate", Path("/art/x"), ("arc_easy", "hellaswag"), 10, Path("/data/eval"), False)]
        table = screen.query_one(RecoveryTable)
        assert table.row_count == 2
        for task in ("arc_easy", "hellaswag"):
            row = table.get_row(task)
            assert row[2] == f"{BASE[task]:.4f}" and row[3] == f"{QUANT[task]:.4f}"
            assert row[4].startswith(f"{QUANT[task] / BASE[task]:.1%}")
            assert str(row[5]) == ("PASS" if QUANT[task] / BASE[task] >= 0.96 else "FAIL")
        verdict = screen.query_one("#verdict", Label)
        assert "gate FAILED" in text_of(verdict) and verdict.has_class("fail")
        bars = text_of(screen.query_one("#bars"))
        assert "hellaswag" in bars and f"{QUANT['hellaswag'] / BASE['hellaswag']:6.1%}" in bars
        plot = text_of(screen.query_one("#pareto"))  # the fake's auto points: one failed, one chosen, one passed
        assert plot.count("✗") == 2 and plot.count("◉") == 2 and plot.count("●") == 2  # legend + point each
        assert "chosen: 6.41 bits per weight" in plot and "5.29" in plot and "7.65" in plot


async def test_evaluate_error_is_shown_not_raised(tmp_path):
    from tui_fakes import FakeServices

    app = make_app(services=FakeServices(tmp_path, fail_eval=True))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        app.screen.query_one("#artifact", Input).value = "/art/x"
        await pilot.click("#run")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "no kvant.json manifest" in text_of(app.screen.query_one("#stage", Label))
        assert not app.screen.query_one("#run", Button).disabled


async def test_serve_start_stats_stop(fake):
    messages = []
    app = make_app(services=fake)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await pilot.press("f4")
        screen = app.screen
        screen.poll_timer.pause()  # the polls below are the only ones, so the rates are known
        screen.query_one("#artifact", Input).value = "/art/x"
        screen.query_one("#port", Input).value = "8123"
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.server is not None and app.server.base_url == "http://127.0.0.1:8123"
        assert "serving x at http://127.0.0.1:8123" in text_of(screen.query_one("#status", Label))
        for _ in range(3):
            screen._tick()
            await app.workers.wait_for_complete()
            await pilot.pause()
        # the fake's clock advances 1 s per reading, so each rate is the tokens generated between two polls
        assert list(screen.query_one(Sparkline).data) == [float(n) for n in GENERATED_PER_POLL[1:3]]
        assert text_of(screen.query_one("#running", Label)) == "running 2"
        assert text_of(screen.query_one("#prefix", Label)) == "prefix hit 50.0%"
        assert text_of(screen.query_one("#ttft", Label)) == "TTFT 12.0 ms"
        assert "25.0%" in text_of(screen.query_one("#kv"))
        await pilot.press("ctrl+t")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.server is None and ("stop_server", "http://127.0.0.1:8123") in fake.calls
        assert [m.handle is None for m in unique(messages, ServerChanged)] == [False, True]


async def test_chat_streams_reply(fake):
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        app.screen.query_one("#artifact", Input).value = "/art/x"
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.press("f5")
        screen = app.screen
        assert "chatting with x" in text_of(screen.query_one("#server", Label))
        screen.query_one("#temperature", Input).value = "0"
        screen.query_one("#max-tokens", Input).value = "32"
        await pilot.press(*"hello", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        turns = [(m.role, m.text) for m in screen.query(ChatMessage)]
        assert turns == [("user", "hello"), ("assistant", "".join(REPLY))]
        assert ("chat", "hello", 0.0, 32) in fake.calls


async def test_chat_without_server_warns(fake):
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await pilot.press(*"hi", "enter")
        await pilot.pause()
        assert not app.screen.query(ChatMessage)
        assert not [c for c in fake.calls if c[0] == "chat"]


async def test_push_dry_run_previews_card_and_real_push_asks_first(fake):
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f6")
        screen = app.screen
        screen.query_one("#artifact", Input).value = "/art/x"
        screen.query_one("#repo", Input).value = "me/x-w4a16"
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert fake.calls[-1] == ("push", Path("/art/x"), "me/x-w4a16", False, True, False)
        assert screen.query_one("#card", TextArea).text == CARD
        assert "dry run: nothing uploaded (3 files)" in text_of(screen.query_one("#stage", Label))
        screen.query_one("#dry-run", Switch).value = False
        await pilot.pause()
        await pilot.click("#push")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("escape")  # declining uploads nothing
        await pilot.pause()
        assert len([c for c in fake.calls if c[0] == "push"]) == 1
        await pilot.click("#push")
        await pilot.pause()
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert fake.calls[-1] == ("push", Path("/art/x"), "me/x-w4a16", False, False, False)
        assert "pushed to https://huggingface.co/me/x-w4a16" in text_of(screen.query_one("#stage", Label))


async def test_every_screen_fits_80x24(fake):
    app = make_app(services=fake)
    async with app.run_test(size=(80, 24)) as pilot:
        for name, (_, key) in AREAS.items():
            await pilot.press(key)
            await pilot.pause()
            for button in app.screen.query(Button):
                region = button.region
                assert region.width > 0 and region.bottom <= 23, f"{name}: {button.id} is off screen"
