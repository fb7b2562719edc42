import json
import pkgutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = {"kvant.artifact": REPO / "artifact", "kvant.engine": REPO / "engine", "kvant.quantize": REPO / "quantize", "kvant.eval": REPO / "eval",
        "kvant.kernels": REPO / "kernels"}
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


def test_core_imports_neither_textual_nor_tui():
    modules = core_modules()
    assert {"kvant.engine.registry", "kvant.artifact.errors", "kvant.quantize", "kvant.kernels"} <= set(modules)
    proc = subprocess.run([sys.executable, "-P", "-c", PROBE, json.dumps(modules)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}, "every core module must import without the TUI"
    assert result["loaded"] == [], f"core modules pulled in {result['loaded']}"


def test_tui_does_import_textual():
    # the probe above would pass vacuously if it could not see textual at all
    code = "import sys, kvant.tui.app; print('textual' in sys.modules)"
    proc = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.stdout.strip() == "True", proc.stderr[-2000:]
