import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

# loopback only: never let a proxy setting route the fake hub's 127.0.0.1 traffic elsewhere
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

_spec = importlib.util.spec_from_file_location("push_fake_hub", Path(__file__).with_name("fake_hub.py"))
fake_hub = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_hub)

TOKEN = "hf_kvantTestToken0123456789abcdefXYZ"
REPO_ID = "kvant-test/smol-w4a16"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(artifact: Path, manifest: dict) -> None:
    files = {p.relative_to(artifact).as_posix(): _sha256(p) for p in sorted(artifact.rglob("*"))
             if p.is_file() and p.name != "kvant.json"}
    (artifact / "kvant.json").write_text(json.dumps(dict(manifest, files=files), indent=2))


def build_artifact(root: Path, *, weight_bytes: int = 2**20, passed: bool = True, evaluated: bool = True,
                   seed: int = 0) -> Path:
    """A synthetic artifact shaped like `kvant quantize` + `kvant eval` output; weights are random tensors."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    art = root / "artifact"
    (art / "eval").mkdir(parents=True)
    (art / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized"}}, indent=2))
    n = weight_bytes // 4
    save_file({"model.layers.0.mlp.up_proj.weight_packed": rng.integers(-2**31, 2**31 - 1, n, dtype=np.int32),
               "model.layers.0.mlp.up_proj.weight_scale": rng.standard_normal((64, 8)).astype(np.float16)},
              str(art / "model.safetensors"))
    (art / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}))
    (art / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    (art / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}\n")
    (art / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    (art / "recipe.yaml").write_text("scheme: w4a16\nalgorithm: gptq\ngroup_size: 128\nignore: [lm_head]\n")
    (art / "README.md").write_text("# placeholder card written by quantize\n")
    gate = 0.96
    if evaluated:
        quant = [0.61, 0.43] if passed else [0.61, 0.20]
        tasks = [{"task": t, "metric": m, "base": b, "base_stderr": 0.01, "quant": q, "quant_stderr": 0.01,
                  "recovery": q / b, "recovery_stderr": 0.02, "passed": q / b >= gate}
                 for t, m, b, q in (("arc_easy", "acc_norm", 0.62, quant[0]),
                                    ("hellaswag", "acc_norm", 0.44, quant[1]))]
        (art / "eval" / "results.json").write_text(json.dumps({
            "format": 1, "created": "2026-11-23T00:00:00+00:00", "lm_eval_version": "0.4.13", "limit": 50,
            "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "artifact": str(art), "gate": {"min_recovery": gate},
            "tasks": tasks, "perplexity": {"task": "wikitext", "base": 20.5, "quant": 21.25, "ratio": 21.25 / 20.5},
            "generative": None, "passed": all(t["passed"] for t in tasks)}, indent=2))
        (art / "eval" / "report.md").write_text("| task | recovery |\n")
    write_manifest(art, {
        "format": 1, "kvant_version": "0.1.0", "created": "2026-11-23T00:00:00+00:00", "scheme": "w4a16",
        "kv_cache_dtype": "auto",
        "base_model": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "path": "/nonexistent/SmolLM2-135M-Instruct",
                       "revision": "12fd25f77366fa6b3b4b768ec3050bf629380bac", "architecture": "LlamaForCausalLM",
                       "license": "apache-2.0"},
        "recipe": {"scheme": "w4a16", "algorithm": "gptq", "group_size": 128, "ignore": ["lm_head"]},
        "calibration": {"source": "HuggingFaceTB/smoltalk", "num_samples": 64, "seq_len": 512, "sha256": "0" * 64},
        "gate": {"min_recovery": gate}})
    return art


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """No stored login, no HF_TOKEN, a private HF_HOME; Xet off unless a test turns it on."""
    import huggingface_hub.constants as C

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(C, "HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(C, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(C, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(C, "HF_HUB_DISABLE_XET", True)
    return tmp_path


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def make_artifact(hf_env):
    return lambda **kwargs: build_artifact(hf_env, **kwargs)


@pytest.fixture
def start_hub(hf_env, monkeypatch):
    """start_hub(mode, **options) -> a running FakeHub with the client's Xet switch set to match the mode."""
    import huggingface_hub.constants as C

    hubs = []

    def start(mode: str, **options):
        monkeypatch.setattr(C, "HF_HUB_DISABLE_XET", mode != "xet")
        cas = hf_env / "cas"
        cas.mkdir(exist_ok=True)
        hubs.append(fake_hub.FakeHub(mode, TOKEN, cas_dir=cas, **options).start())
        return hubs[-1]

    yield start
    for h in hubs:
        h.stop()


@pytest.fixture
def hub(start_hub):
    return start_hub("lfs-basic")
