"""Calibration within a small host: the base checkpoint read lazily, one decoder layer at a time, and the calibration
activations kept on the accelerator up to a budget, spilled to disk beyond it.

The model is a skeleton on the meta device; `Checkpoint.materialize` gives one module real CPU storage from the
safetensors shards (each shard opened, read and closed again, so no mapping of the whole checkpoint stays resident),
and `release` returns it to meta once its tensors are written."""
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from kvant.artifact.errors import KvantError

SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some older checkpoints carry that the model does not load


class Checkpoint:
    """A safetensors checkpoint folder (one file or an index of shards): tensor names -> file, read on demand."""

    def __init__(self, src: Path, dtype: torch.dtype | None):
        self.src, self.dtype = Path(src), dtype
        index = self.src / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self.file_of = {name: self.src / f for name, f in weight_map.items()}
        else:
            files = sorted(self.src.glob("*.safetensors"))
            if not files:
                raise KvantError(f"{src}: no *.safetensors weights")
            self.file_of = {}
            for file in files:
                with self._open(file) as f:
                    self.file_of.update({name: file for name in f.keys()})

    @staticmethod
    def _open(file: Path):
        try:
            return safe_open(str(file), framework="pt")
        except (SafetensorError, FileNotFoundError) as exc:
            raise KvantError(f"cannot read {file}: {exc}") from None

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.file_of if n.startswith(prefix) and not n.endswith(SKIPPED_SUFFIXES))

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        """{name: tensor} on CPU, floating tensors in the model dtype (what transformers loads with dtype="auto")."""
        by_file: dict[Path, list[str]] = {}
        for name in names:
            if name not in self.file_of:
                raise KvantError(f"{self.src}: the checkpoint has no tensor {name!r}")
            by_file.setdefault(self.file_of[name], []).append(name)
        out = {}
        for file, group in by_file.items():
            with self._open(file) as f:
                for name in group:
                    t = f.get_tensor(name)
                    out[name] = t.to(self.dtype) if self.dtype is not None and t.is_floating_point() else t
        return out

    def materialize(self, module: nn.Module, prefix: str) -> nn.Module:
        """Give a meta `module` CPU storage holding the checkpoint's `prefix`-named tensors (all of them required)."""
        wanted = [prefix + n for n in module.state_dict()]
        state = {n.removeprefix(prefix): t for n, t in self.read(wanted).items()}
        module.load_state_dict(state, assign=True)
        return module


def release(module: nn.Module) -> None:
    # back to meta: frees the module's storage once its tensors have been written
    module.to("meta")


def skeleton(src: Path, dtype: torch.dtype):
    """The transformers model with every parameter on the meta device, and real rotary tables on the CPU."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(src)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    rotary = model.model.rotary_emb
    with torch.device("cpu"):
        model.model.rotary_emb = type(rotary)(config=model.config)
    return model.eval()


class Activations:
    """Calibration activations for one pass: a list of per-sample tensors kept on `device` while the shared budget
    allows, spilled to files under `spill_dir` beyond it. Values round-trip exactly (same dtype either way)."""

    def __init__(self, budget: "ActivationBudget"):
        self.budget = budget
        self.items: list[torch.Tensor | Path] = []
        self.nbytes = 0

    def append(self, t: torch.Tensor) -> None:
        size = t.numel() * t.element_size()
        if self.budget.take(size):
            self.items.append(t.to(self.budget.device))
            self.nbytes += size
        else:
            path = self.budget.spill_path()
            save_file({"t": t.detach().contiguous().cpu()}, str(path))
            self.items.append(path)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        for item in self.items:
            yield load_file(str(item), device=str(self.budget.device))["t"] if isinstance(item, Path) else item

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.items[i]
        return load_file(str(item), device=str(self.budget.device))["t"] if isinstance(item, Path) else item

    def free(self) -> None:
        self.budget.give_back(self.nbytes)
        for item in self.items:
            if isinstance(item, Path):
                item.unlink(missing_ok=True)
        self.items, self.nbytes = [], 0


class ActivationBudget:
    """Bytes of activations all live `Activations` may hold on `device`; the rest go to a temp folder, removed by
    `close()`."""

    def __init__(self, device: torch.device, budget_bytes: int):
        self.device, self.left = torch.device(device), budget_bytes
        self._dir: Path | None = None
        self._n = 0
        self.spilled_bytes = 0

    def take(self, size: int) -> bool:
        if size > self.left:
            self.spilled_bytes += size
            return False
        self.left -= size
        return True

    def give_back(self, size: int) -> None:
        self.left += size

    def spill_path(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="kvant-activations-"))
        self._n += 1
        return self._dir / f"{self._n}.safetensors"

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
