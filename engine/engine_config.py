from dataclasses import dataclass

from kvant.engine.memory import parse_size

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
    enable_prefix_caching: bool = True
    enforce_eager: bool = False  # no CUDA graphs
    dtype: str = "auto"  # bf16 (the checkpoint's dtype) on CUDA, float32 on CPU
    device: str = "auto"
    kv_cache_dtype: str = "auto"  # "auto": the model dtype; "fp8": e4m3 with the checkpoint's k/v scales
    seed: int = 0  # for requests without their own seed
    kernel_arch: str | None = None  # e.g. "sm_86": run the kernel paths that card would take (testing fallbacks)

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
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
