from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def local_tasks(shared_data, tmp_path_factory) -> Path:
    from kvant.eval.data import prepare_tasks

    return prepare_tasks(shared_data, tmp_path_factory.mktemp("eval-data"))


@pytest.fixture(scope="session")
def task_manager(local_tasks):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(local_tasks))


@pytest.fixture(scope="session")
def engine_factory():
    from kvant.engine import LLM

    return lambda path: LLM(str(path), dtype="float32", device="cpu", max_model_len=1024, num_kv_blocks=256)


@pytest.fixture
def kvant_home(tmp_path, monkeypatch) -> Path:
    # base-model caches and prepared data go here, not into the user's ~/.cache/kvant
    monkeypatch.setenv("KVANT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
