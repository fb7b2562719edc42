"""What vLLM's options mean for kvant: generation-config sampling defaults, chat templates given on the command
line, remote code, tensor parallelism (handed to vLLM itself), the quantization name."""
import json
import shlex
from pathlib import Path

from kvant.artifact.errors import KvantError

# generation_config.json field -> SamplingParams field; the ones vLLM's "auto" mode reads
GENERATION_FIELDS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                     "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}
QUANTIZATIONS = (None, "compressed-tensors")
# `kvant serve` flag -> `vllm serve` flag, for the options both have with one meaning
SHARED_SERVE_FLAGS = ("host", "port", "served_model_name", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
                      "gpu_memory_utilization", "kv_cache_dtype", "dtype", "seed", "chat_template",
                      "generation_config")


def sampling_defaults(source: str, model_path: Path) -> dict:
    """`auto`: the model's generation_config.json; `vllm`: none (SamplingParams' defaults); else a folder holding
    generation_config.json. Read through transformers' GenerationConfig and its diff dict, as vLLM does."""
    if source == "vllm":
        return {}
    folder = Path(model_path) if source == "auto" else Path(source).expanduser()
    if source != "auto" and not (folder / "generation_config.json").is_file():
        raise KvantError(f"generation_config must be auto, vllm or a folder holding generation_config.json; "
                         f"{source} has none")
    if not (folder / "generation_config.json").is_file():
        return {}
    from transformers import GenerationConfig

    try:
        diff = GenerationConfig.from_pretrained(str(folder)).to_diff_dict()
    except (OSError, ValueError) as exc:
        raise KvantError(f"cannot read {folder / 'generation_config.json'}: {' '.join(str(exc).split())}") from exc
    return {ours: diff[theirs] for theirs, ours in GENERATION_FIELDS.items() if diff.get(theirs) is not None}


def load_chat_template(value: str) -> str:
    """A Jinja file's contents, or the value itself when it is inline Jinja (vLLM's rule)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if any(mark in value for mark in ("{{", "{%")):
        return value
    raise KvantError(f"chat template {value!r} is neither a file nor inline Jinja (no {{{{ or {{% in it)")


def check_remote_code(model_path: Path) -> None:
    """kvant never runs a model's own Python code; a model that needs it is refused in one line."""
    config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    if not config.get("auto_map"):
        return
    from kvant.engine.config import SUPPORTED_ARCHITECTURES

    archs = config.get("architectures") or []
    if archs and archs[0] in SUPPORTED_ARCHITECTURES:
        return  # kvant's own modules implement it; the custom code is not needed
    raise KvantError(f"{model_path} needs its own Python code (config.json auto_map, architecture "
                     f"{archs[0] if archs else '?'}); kvant runs only its built-in architectures "
                     f"({', '.join(SUPPORTED_ARCHITECTURES)}) and never executes model code")


def check_quantization(quantization: str | None) -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be None or 'compressed-tensors' (read from config.json), "
                         f"got {quantization!r}")


def model_reference(model: str) -> str:
    """The model argument as vLLM should get it: an absolute folder, or the Hub id as given; never downloads."""
    from kvant.engine.registry import DEFAULT_ALIASES, default_model_path

    if model.lower() in DEFAULT_ALIASES:
        return str(default_model_path())
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def vllm_serve_command(model: str, tensor_parallel_size: int, options: dict | None = None) -> str:
    """The `vllm serve` line for this model on N GPUs; `options` holds the shared flags' values (None: unset)."""
    argv = ["vllm", "serve", model_reference(model), "--tensor-parallel-size", str(tensor_parallel_size)]
    for name in SHARED_SERVE_FLAGS:
        value = (options or {}).get(name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if (options or {}).get("enforce_eager"):
        argv.append("--enforce-eager")
    if (options or {}).get("enable_prefix_caching") is False:
        argv.append("--no-enable-prefix-caching")
    return shlex.join(argv)


def check_tensor_parallel(tensor_parallel_size: int, model: str, options: dict | None = None) -> None:
    if not isinstance(tensor_parallel_size, int) or tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be an integer >= 1, got {tensor_parallel_size!r}")
    if tensor_parallel_size > 1:
        raise KvantError(f"kvant serves one GPU; vLLM loads this artifact as it is, so for {tensor_parallel_size} "
                         f"GPUs run: {vllm_serve_command(model, tensor_parallel_size, options)}")
