"""Lists every subpackage of the code folders under the `kvant` namespace (see pyproject.toml)."""
from pathlib import Path

from setuptools import setup

# subpackage -> folder, as [tool.setuptools.package-dir] maps them
ROOTS = {"artifact": "artifact", "quantize": "quantize", "engine": "engine", "eval": "eval", "tui": "tui",
         "kernels": "kernels", "bench": "bench/harness"}
DATA = ("*.yaml", "*.tcss", "*.txt", "*.json", "*.jsonl", "*.md", "*.jinja")


def _packages():
    here = Path(__file__).parent
    found = []
    for name, folder in ROOTS.items():
        for init in sorted((here / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(here / folder)
            found.append(".".join(("kvant", name, *rel.parts)))
    return found


packages = _packages()
# recipes/*.yaml ship as the data package kvant.recipes (see kvant.quantize.recipe.RECIPES_DIR)
setup(packages=[*packages, "kvant.recipes"],
      package_data={**{p: list(DATA) for p in packages}, "kvant.recipes": ["*.yaml"]})
