"""The one-way layers: no core package loads Textual or kvant.tui (a fresh interpreter imports every core module),
and the import-linter contract that `make test` runs fails on a back-import planted into the real import graph."""
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = {"kvant.artifact": REPO / "artifact", "kvant.kernels": REPO / "kernels", "kvant.engine": REPO / "engine",
        "kvant.quantize": REPO / "quantize", "kvant.eval": REPO / "eval", "kvant.bench": REPO / "bench" / "harness"}
# imports every core module in one fresh interpreter (torch loads once), then lists what came along
PROBE = """
import importlib, json, sys
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception as exc:  # reported, so the test names the module that cannot import
        failed[name] = f"{type(exc).__name__}: {exc}"
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich') or m.startswith('kvant.tui'))
print(json.dumps({"failed": failed, "loaded": loaded}))
"""


def core_modules() -> list[str]:
    found = []
    for package, folder in CORE.items():
        found.append(package)
        found += [m.name for m in pkgutil.walk_packages([str(folder)], prefix=f"{package}.")
                  if not m.name.rsplit(".", 1)[-1].startswith("_")]
    return sorted(found)


def _probe(modules: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-P", "-c", PROBE, json.dumps(modules)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_core_imports_neither_textual_nor_tui():
    modules = core_modules()
    # the walk reaches every folder's modules, nested packages included
    for package, folder in CORE.items():
        on_disk = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
        assert {f"{package}.{stem}" for stem in on_disk} <= set(modules), package
    assert "kvant.engine.server.app" in modules
    result = _probe(modules)
    assert result["failed"] == {}, "every core module must import without the TUI"
    assert result["loaded"] == [], f"core modules pulled in {result['loaded']}"


def test_the_probe_sees_textual_when_it_is_loaded():
    # the probe above would pass vacuously if it could not see textual at all
    result = _probe(["kvant.artifact.errors", "kvant.tui.app"])
    assert result["failed"] == {} and {"textual", "rich", "kvant.tui.app"} <= set(result["loaded"])


def _lint_with(planted: list[tuple[str, str]], monkeypatch) -> bool:
    # `lint-imports` as `make test` runs it, on the real import graph plus the planted (importer, imported) edges
    from importlinter import configuration
    from importlinter.application import use_cases
    from importlinter.application.app_config import settings

    configuration.configure()
    real = settings.GRAPH_BUILDER

    class Planting:
        def build(self, **kwargs):
            graph = real.build(**kwargs)
            for importer, imported in planted:
                graph.add_import(importer=importer, imported=imported, line_number=1,
                                 line_contents=f"import {imported}")
            return graph

    monkeypatch.chdir(REPO)
    settings.configure(GRAPH_BUILDER=Planting())
    try:
        return use_cases.lint_imports(config_filename=str(REPO / "pyproject.toml"), cache_dir=None)  # True: kept
    finally:
        settings.configure(GRAPH_BUILDER=real)


@pytest.mark.parametrize("importer, imported", [
    ("kvant.engine.llm", "kvant.tui.cli"),  # engine reaching up to the CLI
    ("kvant.artifact.manifest", "kvant.engine.registry"),  # the leaf importing the engine
    ("kvant.quantize.api", "kvant.eval.runner"),  # quantize reaching up to eval (the old gate-defaults import)
    ("kvant.kernels.rope", "kvant.artifact.errors"),  # the two bottom packages are independent
])
def test_layer_contract_fails_on_a_planted_back_import(importer, imported, monkeypatch, capsys):
    assert _lint_with([], monkeypatch), capsys.readouterr().out[-2000:]
    assert not _lint_with([(importer, imported)], monkeypatch)
    assert f"{importer} -> {imported}" in capsys.readouterr().out
