"""The two configs, validated once: the fields kvant needs from a Hugging Face `config.json` (`ModelConfig`) and
the engine's options (`EngineConfig`, the keyword arguments of `LLM` / `AsyncLLM`)."""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from kvant.artifact.errors import KvantError

# architecture -> (model family, qkv bias by default, per-head q/k RMSNorm)
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", False, False),
    "MistralForCausalLM": ("mistral", False, False),
    "Qwen2ForCausalLM": ("qwen2", True, False),
    "Qwen3ForCausalLM": ("qwen3", False, True),
}
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(slots=True, frozen=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_scaling: dict | None = field(default=None, compare=False)  # factor etc. for linear / llama3
    max_position_embeddings: int = 4096
    max_model_len: int = 4096  # what the engine allows: max_position_embeddings, capped by a sliding window
    attention_bias: bool = False  # bias on q/k/v (Qwen2)
    qk_norm: bool = False  # RMSNorm on each q/k head before RoPE (Qwen3)
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str = "bfloat16"
    quantization_config: dict | None = field(default=None, compare=False)
    name_or_path: str = ""

    def __post_init__(self):
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            supported = ", ".join(SUPPORTED_ARCHITECTURES)
            raise KvantError(f"unsupported architecture {self.architecture!r}: kvant supports {supported}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_model_len"):
            if getattr(self, name) < 1:
                raise KvantError(f"config {name} must be >= 1, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise KvantError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise KvantError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise KvantError(f"unsupported rope type {self.rope_type!r}: kvant supports {', '.join(SUPPORTED_ROPE_TYPES)}")

    @property
    def family(self) -> str:
        return SUPPORTED_ARCHITECTURES[self.architecture][0]

    @property
    def num_params(self) -> int:
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        layer = h * (q + 2 * kv) + q * h + 3 * h * i + 2 * h
        if self.attention_bias:  # q/k/v biases (Qwen2)
            layer += q + 2 * kv
        if self.qk_norm:  # per-head RMSNorm weights on q and k (Qwen3)
            layer += 2 * self.head_dim
        return self.num_hidden_layers * layer + v * h * (1 if self.tie_word_embeddings else 2) + h

    @classmethod
    def from_dict(cls, cfg: dict, generation_config: dict | None = None, name_or_path: str = "") -> "ModelConfig":
        archs = cfg.get("architectures") or []
        if not archs:
            raise KvantError(f"config.json of {name_or_path or 'the model'} names no architecture")
        arch = archs[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            supported = ", ".join(SUPPORTED_ARCHITECTURES)
            raise KvantError(f"unsupported architecture {arch!r}: kvant supports {supported}")
        _, default_bias, qk_norm = SUPPORTED_ARCHITECTURES[arch]
        try:
            heads = int(cfg["num_attention_heads"])
            hidden = int(cfg["hidden_size"])
            rope = _rope(cfg)
            max_pos = int(cfg.get("max_position_embeddings", 4096))
            window = cfg.get("sliding_window") if cfg.get("use_sliding_window", arch == "MistralForCausalLM") else None
            return cls(
                architecture=arch,
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_hidden_layers=int(cfg["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=rope["rope_theta"],
                rope_type=rope["rope_type"],
                rope_scaling=rope,
                max_position_embeddings=max_pos,
                # kvant has no sliding-window attention: cap the context at the window so results stay exact
                max_model_len=min(max_pos, int(window)) if window else max_pos,
                attention_bias=bool(cfg.get("attention_bias", default_bias)),
                qk_norm=qk_norm,
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                bos_token_id=cfg.get("bos_token_id"),
                eos_token_ids=_eos_ids(cfg, generation_config),
                torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"),
                quantization_config=cfg.get("quantization_config") or cfg.get("compression_config"),
                name_or_path=name_or_path,
            )
        except KeyError as exc:
            raise KvantError(f"config.json of {name_or_path or 'the model'} lacks {exc.args[0]!r}") from None

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise KvantError(f"model folder {path} has no config.json")
        try:
            cfg = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as exc:
            raise KvantError(f"{cfg_file} is not valid JSON: {exc}") from None
        gen_file = path / "generation_config.json"
        gen = json.loads(gen_file.read_text()) if gen_file.exists() else None
        return cls.from_dict(cfg, gen, name_or_path=str(path))


def load_config_file(path: str | Path) -> ModelConfig:
    """A ModelConfig from a bare config.json (e.g. bench/configs/llama-3.1-8b.json)."""
    path = Path(path)
    if not path.is_file():
        raise KvantError(f"config file {path} does not exist")
    try:
        return ModelConfig.from_dict(json.loads(path.read_text()), name_or_path=str(path))
    except json.JSONDecodeError as exc:
        raise KvantError(f"{path} is not valid JSON: {exc}") from None


def _rope(cfg: dict) -> dict:
    # transformers 5 writes `rope_parameters`; older configs have `rope_theta` + `rope_scaling`
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    params["rope_theta"] = float(params["rope_theta"])
    params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
    return params


def _eos_ids(cfg: dict, gen: dict | None) -> tuple[int, ...]:
    ids: list[int] = []
    for source in (cfg, gen or {}):
        value = source.get("eos_token_id")
        for item in value if isinstance(value, list) else [value]:
            if item is not None and int(item) not in ids:
                ids.append(int(item))
    return tuple(ids)


def rope_inv_freq(config: ModelConfig):
    """Inverse frequencies [head_dim / 2] with the config's scaling applied (HF semantics)."""
    import torch

    d = config.head_dim
    # float32 throughout, as transformers computes it, so positions rotate bit-for-bit alike
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    scaling = config.rope_scaling or {}
    if config.rope_type == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    elif config.rope_type == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        inv_freq = torch.where(is_medium, smoothed, scaled)
    return inv_freq


KV_CACHE_DTYPES = ("auto", "fp8")
DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(slots=True, frozen=True)
class EngineConfig:
    max_num_seqs: int = 256  # sequences in one step
    max_num_batched_tokens: int = 8192  # tokens in one step; long prompts are prefilled in chunks of at most this
    max_model_len: int | None = None  # None: the model's own limit
    block_size: int = 16  # tokens per KV-cache block
    gpu_memory_utilization: float = 0.9  # share of the card kvant may use (weights + activations + KV cache)
    kv_cache_memory: int | str | None = None  # bytes for the KV cache ("6GiB" accepted); overrides the share above
    num_kv_blocks: int | None = None  # explicit pool size (tests); overrides both sizes above
    gpu_memory: int | str | None = None  # plan as if the card had this much memory ("24GiB"): simulates a smaller card
    enable_prefix_caching: bool = True
    enforce_eager: bool = False  # no CUDA graphs
    dtype: str = "auto"  # the checkpoint's on CUDA; on CPU a bf16 checkpoint stays bf16 if bf16 is native, else fp32
    device: str = "auto"
    kv_cache_dtype: str = "auto"  # "auto": the model dtype; "fp8": e4m3 with the checkpoint's k/v scales
    seed: int = 0  # for requests without their own seed
    kernel_arch: str | None = None  # e.g. "sm_86": run the kernel paths that card would take (testing fallbacks)
    # launch a decode step before the host has read the last one's tokens (vLLM's option of the same name);
    # None: on where decode runs in CUDA graphs (on CPU it only adds work)
    async_scheduling: bool | None = None

    def __post_init__(self):
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int) or self.max_model_len < 1):
            raise ValueError(f"max_model_len must be an integer >= 1 or None, got {self.max_model_len!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.kv_cache_memory is not None:
            size = parse_size(self.kv_cache_memory)
            if size < 1:
                raise ValueError(f"kv_cache_memory must be > 0 bytes, got {self.kv_cache_memory!r}")
            object.__setattr__(self, "kv_cache_memory", size)
        if self.gpu_memory is not None:
            try:
                size = parse_size(self.gpu_memory)
            except ValueError:
                raise ValueError(f"gpu_memory must be a size like 24GiB or 8GB, got {self.gpu_memory!r}") from None
            object.__setattr__(self, "gpu_memory", size)
        if self.num_kv_blocks is not None and (not isinstance(self.num_kv_blocks, int) or self.num_kv_blocks < 1):
            raise ValueError(f"num_kv_blocks must be an integer >= 1 or None, got {self.num_kv_blocks!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype must be auto or fp8, got {self.kv_cache_dtype!r}")
        if self.kernel_arch is not None:
            from kvant.engine.kernel_select import parse_arch

            parse_arch(self.kernel_arch)
        if self.async_scheduling not in (None, True, False):
            raise ValueError(f"async_scheduling must be True, False or None, got {self.async_scheduling!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


def parse_size(text: str | int | None) -> int | None:
    """'6GiB', '512MiB', '4G', '1.5GB' or a byte count -> bytes."""
    if text is None or isinstance(text, int):
        return text
    units = {"": 1, "b": 1, "k": 1 << 10, "kb": 10**3, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
             "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}
    s = text.strip().lower().replace(" ", "")
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in units or value <= 0:
        raise ValueError(f"kv_cache_memory must be a size like 6GiB or 512MiB, got {text!r}")
    return int(value * units[unit])
