import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The real default model (SmolLM2-135M-Instruct, bf16 HF folder), pulled and converted once per machine."""
    from kvant.engine.registry import pull_default

    return pull_default()


@pytest.fixture
def tiny_int4_recipe(tmp_path) -> Path:
    """INT4 GPTQ of the first two decoder layers on a tiny builtin calibration set: the whole-flow tests' recipe
    (all 30 layers of the default model take one to two minutes of GPTQ on two CPU cores by themselves)."""
    recipe = tmp_path / "tiny-int4.yaml"
    recipe.write_text((REPO / "tests" / "tiny-int4.yaml").read_text())
    return recipe


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"evaluation data folder {SHARED_DATA} is missing (expected ../shared/data beside the repo)")
    return SHARED_DATA

# tests never reach the Hub; a test that needs a Hub-like server starts its own on 127.0.0.1
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
