"""From a checkout, the repo's folders (kernels/, eval/, ...) must never stand in for installed packages of those
names: transformers imports HF's `kernels`, and a Python that has the repo root on sys.path finds ours instead."""
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import httpx

from kvant.tui.app import make_app
from kvant.tui.services import Services

REPO = Path(__file__).resolve().parents[2]
REPO_FOLDERS = ("kernels", "engine", "quantize", "eval", "tui")


def _inside_repo(location: str | None) -> bool:
    # a code folder of this checkout (a virtual environment inside the checkout is fine)
    if location is None or not Path(location).resolve().is_relative_to(REPO):
        return False
    return Path(location).resolve().relative_to(REPO).parts[:1] in {(f,) for f in REPO_FOLDERS}


def test_no_top_level_import_resolves_to_a_repo_folder():
    assert REPO not in {Path(entry or ".").resolve() for entry in sys.path}, f"the repo root is on sys.path: {sys.path[:4]}"
    for name in REPO_FOLDERS:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        locations = [spec.origin, *(spec.submodule_search_locations or [])]
        assert not any(_inside_repo(loc) for loc in locations), f"`import {name}` resolves to {locations}"


def test_hf_kernels_package_imports_where_installed():
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        return  # transformers < 5.25 does not need it; the test above still guards the folders
    import kernels
    from transformers.integrations import hub_kernels  # the import that failed when our folder shadowed it

    assert not _inside_repo(kernels.__file__)
    assert hub_kernels.__name__ == "transformers.integrations.hub_kernels"


async def test_serve_screen_starts_a_server_from_the_repo_root(default_model, monkeypatch):
    # as a user who opens the TUI in a checkout: cwd is the repo root and nothing sets PYTHONSAFEPATH for them
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    from textual.widgets import Input

    app = make_app(services=Services())
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f4")
        app.screen.query_one("#artifact", Input).value = str(default_model)
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        handle = app.server
        assert handle is not None, "the Serve screen did not start a server"
        try:
            reply = httpx.post(f"{handle.base_url}/v1/completions", timeout=60,
                               json={"model": handle.model_name, "prompt": "The capital of France is",
                                     "max_tokens": 4, "temperature": 0})
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["text"].strip()
        finally:
            await pilot.press("ctrl+t")
            await app.workers.wait_for_complete()
            await pilot.pause()
        assert app.server is None and not handle.alive()
