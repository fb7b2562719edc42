"""Shipped recipes (package kvant.recipes) and the built-in calibration sample (kvant.quantize.data) travel in the
wheel and are found from a non-editable install."""
import subprocess
import sys
import zipfile
from pathlib import Path

from kvant.quantize.recipe import shipped_recipe_names

REPO = Path(__file__).resolve().parents[2]
# run with the wheel's copy of kvant on the path and the editable install's import hook removed
PROBE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in type(f).__module__]
from kvant.quantize import recipe
print(recipe.__file__)
print(recipe.RECIPES_DIR)
print(",".join(recipe.shipped_recipe_names()))
print(recipe.load_recipe("w4a16-gptq").quant_scheme.name)
from kvant.quantize.calibration_data import BUILTIN
print(BUILTIN.is_file())
"""


def test_wheel_ships_the_recipes_and_an_install_finds_them(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    src = tmp_path / "src"
    for rel in filter(None, tracked.decode().split("\0")):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((REPO / rel).read_bytes())
    subprocess.run([sys.executable, "-P", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(tmp_path / "whl")], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "whl").glob("kvant-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = shipped_recipe_names()
    assert shipped and {f"kvant/recipes/{n}.yaml" for n in shipped} <= set(names)
    assert "kvant/quantize/data/builtin.jsonl" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = subprocess.run([sys.executable, "-P", "-c", PROBE], capture_output=True, text=True, cwd=tmp_path,
                           env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert probe.returncode == 0, probe.stderr
    module, recipes_dir, names_line, scheme, builtin = probe.stdout.strip().splitlines()
    assert Path(module).is_relative_to(site) and Path(recipes_dir) == site / "kvant" / "recipes"
    assert names_line.split(",") == shipped and scheme == "w4a16"
    assert builtin == "True"  # the built-in calibration sample travels too
