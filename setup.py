"""Lists every subpackage of the code folders under the `kvant` namespace (see pyproject.toml)."""
from pathlib import Path

from setuptools import setup

ROOTS = ("artifact", "quantize", "engine", "eval", "tui", "kernels")
DATA = ("*.yaml", "*.tcss", "*.txt", "*.json", "*.jsonl", "*.md", "*.jinja")


def _packages():
    here = Path(__file__).parent
    found = []
    for root in ROOTS:
        for init in sorted((here / root).rglob("__init__.py")):
            rel = init.parent.relative_to(here / root)
            found.append(".".join(("kvant", root, *rel.parts)))
    return found


packages = _packages()
# recipes/*.yaml ship as the data package kvant.recipes (see kvant.quantize.recipe.RECIPES_DIR)
setup(packages=[*packages, "kvant.recipes"],
      package_data={**{p: list(DATA) for p in packages}, "kvant.recipes": ["*.yaml"]})
