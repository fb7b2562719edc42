"""The artifact list: the rows `kvant models list` prints, and Evaluate / Serve / Push taking their target from it."""
from pathlib import Path

import torch
from safetensors.torch import save_file

from textual.widgets import DataTable, Footer, Input, Label

from kvant.artifact import manifest
from kvant.eval.inventory import describe, list_artifacts
from kvant.tui.app import make_app
from kvant.tui.screens.artifacts import COLUMNS, ArtifactsScreen, cells
from kvant.tui.services import Services
from tui_fakes import ARTIFACTS

SIZE = (100, 30)


async def open_list(pilot) -> ArtifactsScreen:
    await pilot.press("f7")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    assert isinstance(pilot.app.screen, ArtifactsScreen)
    return pilot.app.screen


async def test_list_shows_every_artifact_with_the_cli_columns(fake):
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_list(pilot)
        table = screen.query_one("#artifacts", DataTable)
        assert [str(c.label) for c in table.columns.values()] == list(COLUMNS)
        assert table.row_count == len(ARTIFACTS)
        for i, (name, scheme, mib, bits, gate, checksums) in enumerate(ARTIFACTS):
            assert table.get_row_at(i) == [name, scheme, f"{mib:,.0f} MiB", f"{bits:.2f}", gate,
                                           "ok" if checksums == "ok" else "FAILED",
                                           "HuggingFaceTB/SmolLM2-135M-Instruct"]
        assert f"3 artifacts under {fake.artifacts_dir()}" in str(screen.query_one("#where", Label).render())
        await pilot.press("down", "down")  # the detail line names the checksum problem in full
        shown = str(screen.query_one("#detail", Label).render())
        assert str(fake.artifacts_dir() / ARTIFACTS[2][0]) in shown and f"checksums FAILED: {ARTIFACTS[2][5]}" in shown


async def test_walk_from_the_list_to_serve(fake):
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        await open_list(pilot)
        await pilot.press("down")  # the second row: smollm2-135m-w4a16-gptq
        await pilot.press("s")
        await pilot.pause()
        chosen = fake.artifacts_dir() / ARTIFACTS[1][0]
        assert app.current_mode == "serve" and app.artifact == chosen
        assert app.screen.query_one("#artifact", Input).value == str(chosen)
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert ("start_server", chosen, 0) in fake.calls
        assert f"serving {chosen.name}" in str(app.screen.query_one("#status", Label).render())


async def test_evaluate_and_push_take_the_picked_artifact_over_an_older_one(fake):
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        app.screen.query_one("#artifact", Input).value = "/typed/by/hand"
        await open_list(pilot)
        await pilot.press("e")
        await pilot.pause()
        first = fake.artifacts_dir() / ARTIFACTS[0][0]
        assert app.current_mode == "evaluate"
        assert app.screen.query_one("#artifact", Input).value == str(first)
        await open_list(pilot)
        await pilot.press("down", "down")
        await pilot.click("#to-push")
        await pilot.pause()
        third = fake.artifacts_dir() / ARTIFACTS[2][0]
        assert app.current_mode == "push" and app.screen.query_one("#artifact", Input).value == str(third)
        await pilot.press("f3")  # evaluate follows the newer pick too
        assert app.screen.query_one("#artifact", Input).value == str(third)


async def test_empty_list_says_how_to_make_one(tmp_path):
    from tui_fakes import FakeServices

    class NoArtifacts(FakeServices):
        def list_artifacts(self):
            return []

    app = make_app(services=NoArtifacts(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_list(pilot)
        assert "no artifacts under" in str(screen.query_one("#where", Label).render())
        await pilot.press("s")
        await pilot.pause()
        assert app.current_mode == "artifacts" and app.artifact is None


async def test_q_quits_outside_inputs_and_types_inside_them(fake):
    app = make_app(services=fake)
    async with app.run_test(size=SIZE) as pilot:
        footer_keys = {b.binding.key for b in app.screen.query_one(Footer).screen.active_bindings.values()
                       if b.binding.show}
        assert "ctrl+q" in footer_keys
        await pilot.press("f3")
        field = app.screen.query_one("#artifact", Input)
        field.focus()
        await pilot.press("q")
        await pilot.pause()
        assert field.value == "q" and app.is_running
        await open_list(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0 and not app.is_running


def _write_artifact(folder: Path) -> Path:
    # a one-layer W8A16 artifact: int8 codes + per-channel bf16 scales, a manifest over its files
    folder.mkdir(parents=True)
    save_file({"model.layers.0.mlp.down_proj.weight": torch.zeros(8, 16, dtype=torch.int8),
               "model.layers.0.mlp.down_proj.weight_scale": torch.ones(8, 1, dtype=torch.bfloat16)},
              str(folder / "model.safetensors"))
    manifest.write(folder, manifest.build(scheme="w8a16", kv_cache_dtype="auto", base_model={"name": "base/x"},
                                          recipe={}, calibration={}, min_recovery=0.96, kvant_version="0"))
    return folder


def test_real_services_list_the_same_rows_as_the_cli(tmp_path, monkeypatch):
    # the TUI's data is kvant.eval.inventory's, the function whose rows `kvant models list` prints
    monkeypatch.setenv("KVANT_HOME", str(tmp_path))
    good = _write_artifact(tmp_path / "artifacts" / "a-good")
    bad = _write_artifact(tmp_path / "artifacts" / "b-flipped")
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x07")
    rows = Services().list_artifacts()
    assert [cells(r) for r in rows] == [("a-good", "w8a16", "0 MiB", "9.00", "not evaluated", "ok", "base/x"),
                                        ("b-flipped", "w8a16", "0 MiB", "9.00", "not evaluated", "FAILED", "base/x")]
    # 8 bits of code + 16 bits of scale per row of 16 weights
    assert [r.bits_per_weight for r in rows] == [8 + 16 / 16] * 2
    assert rows[0].checksums == "ok" and "model.safetensors" in rows[1].checksums
    assert rows == list_artifacts(tmp_path / "artifacts") and rows[0] == describe(good)
