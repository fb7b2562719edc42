import itertools
import os
import time
from pathlib import Path

import torch

from kvant.engine.config import EngineConfig
from kvant.engine.inputs import parse_prompts
from kvant.engine.llm_engine import LLMEngine
from kvant.engine.outputs import EngineStats, RequestOutput
from kvant.engine.sampling_params import SamplingParams

_REQUEST_COUNTER = itertools.count()


def build_engine(model, tokenizer=None, load_tokenizer: bool = True, **engine_kwargs) -> LLMEngine:
    """An engine for a model name/folder (weights and tokenizer loaded from it) or a built model object.
    `tokenizer`: a tokenizer object or a folder/Hub id to load one from; `load_tokenizer=False`: token ids only.
    `verify=False` (the CLI's --no-verify) skips checking a kvant artifact's files against kvant.json, with a warning."""
    verify = engine_kwargs.pop("verify", True)
    config = EngineConfig(**engine_kwargs)
    times: dict[str, float] = {}  # start-up stage -> seconds, for serve's report
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[stage] = times.get(stage, 0.0) + now - clock
        clock = now

    use_persistent_triton_cache()
    if isinstance(model, (str, Path)):
        from transformers import AutoTokenizer

        from kvant.engine.loader import load_model, resolve_dtype
        from kvant.engine.config import ModelConfig
        from kvant.engine.integrity import check_or_warn
        from kvant.engine.registry import resolve_model

        lap("imports")  # transformers and the kernels (Triton): part of every start, not of verification
        path = resolve_model(str(model))
        check_or_warn(path, verify)  # before a byte of the weights is read
        lap("verify")
        device = torch.device(pick_device(config.device))
        model_config = ModelConfig.from_pretrained(path)
        dtype = resolve_dtype(config.dtype, model_config, device)
        if device.type == "cuda" and config.num_kv_blocks is None and config.kv_cache_memory is None:
            refuse_if_too_big(model_config, config, dtype, device)  # before a byte of the weights is allocated
        lap("plan")
        model = load_model(path, dtype=dtype, device=device, config=model_config)
        lap("load")
        if isinstance(tokenizer, (str, Path)):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        elif tokenizer is None and load_tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(path)
    from kvant.engine.kernel_select import apply_kernel_paths
    from kvant.engine.model_runner import graph_batch_sizes

    rows = () if config.enforce_eager else tuple(graph_batch_sizes(config.max_num_seqs))
    kernel_path = apply_kernel_paths(model, config.kv_cache_dtype, config.kernel_arch, rows)
    lap("tune")
    engine = LLMEngine(model, tokenizer, config, kernel_path)
    lap("plan")  # the KV pool's plan and allocation; the CUDA graphs' share is moved out below
    graphs = engine.runner.graph_capture_s
    times["plan"] -= graphs
    times["graphs"] = graphs
    engine.startup_times = times
    return engine


def use_persistent_triton_cache() -> None:
    """Triton's compiled kernels live under $KVANT_HOME/triton (beside the tuned-kernel table), so a second start
    reuses them; an explicit TRITON_CACHE_DIR wins."""
    from kvant.engine.registry import kvant_home

    os.environ.setdefault("TRITON_CACHE_DIR", str(kvant_home() / "triton"))


def refuse_if_too_big(model_config, config: EngineConfig, dtype: torch.dtype, device: torch.device) -> None:
    """The memory plan's fixed part (weights sized on the meta device, activation peak, CUDA graphs) against the
    card's budget or the --gpu-memory cap: a model that cannot fit is refused in one line before loading."""
    from kvant.engine.loader import build_model
    from kvant.engine.memory import GRAPH_BYTES_PER_BATCH_SIZE, activation_peak_bytes, capped_total, check_fits
    from kvant.engine.model_runner import graph_batch_sizes

    meta = build_model(model_config, dtype, "meta")
    tensors = {id(t): t for t in list(meta.parameters()) + list(meta.buffers())}.values()
    weights = sum(t.numel() * t.element_size() for t in tensors)
    free, total = torch.cuda.mem_get_info(device)
    ours = torch.cuda.memory_allocated(device)
    graphs = 0 if config.enforce_eager else GRAPH_BYTES_PER_BATCH_SIZE * len(graph_batch_sizes(config.max_num_seqs))
    activations = activation_peak_bytes(model_config, config.max_num_batched_tokens, config.max_num_seqs,
                                        dtype.itemsize)
    check_fits(model_config, total_bytes=capped_total(total, config.gpu_memory),
               used_by_others=max(0, total - free - ours), weights_bytes=weights,
               gpu_memory_utilization=config.gpu_memory_utilization, activation_bytes=activations,
               graph_bytes=graphs, capped=config.gpu_memory is not None)


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be auto or cpu: no CUDA GPU is visible")
    return device


class EngineFront:
    """What LLM and AsyncLLM both show of the engine they drive (`self.engine`, an LLMEngine)."""

    engine: LLMEngine

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def model_config(self):
        return self.engine.model_config

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len


class LLM(EngineFront):
    """Offline batch generation: every prompt becomes a request, all run together with continuous batching.
    The constructor takes vLLM's arguments where they mean something on one GPU (see kvant.engine.vllm_options)."""

    def __init__(self, model: str | Path, tokenizer: str | None = None, skip_tokenizer_init: bool = False,
                 trust_remote_code: bool = False, tensor_parallel_size: int = 1, quantization: str | None = None,
                 generation_config: str = "auto", **engine_kwargs):
        from kvant.engine import vllm_options as vo
        from kvant.engine.registry import resolve_model

        vo.check_tensor_parallel(tensor_parallel_size, str(model))
        vo.check_quantization(quantization)
        if engine_kwargs.get("seed", 0) is None:  # vLLM's "no seed": kvant's default seed
            del engine_kwargs["seed"]
        path = resolve_model(str(model))
        vo.check_remote_code(path)
        self._default_sampling = vo.sampling_defaults(generation_config, path)
        self.engine = build_engine(path, tokenizer, load_tokenizer=not skip_tokenizer_init, **engine_kwargs)

    @classmethod
    def from_model(cls, model, tokenizer=None, **engine_kwargs) -> "LLM":
        """Wrap an already built CausalLM (e.g. dummy weights); without a tokenizer, prompts are token ids."""
        llm = cls.__new__(cls)
        llm._default_sampling = {}
        llm.engine = build_engine(model, tokenizer, **engine_kwargs)
        return llm

    def get_tokenizer(self):
        return self.engine.tokenizer

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams from the model's generation_config.json (vLLM's generation_config="auto")."""
        return SamplingParams(**self._default_sampling)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def generate(self, prompts, sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """prompts: a str, token ids, {"prompt": str}, {"prompt_token_ids": ids}, or a list of those (vLLM's forms)."""
        prompts = parse_prompts(prompts)
        params = sampling_params or self.get_default_sampling_params()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"sampling_params must be one SamplingParams or one per prompt ({len(prompts)}), "
                             f"got {len(params)}")
        engine = self.engine
        ids = [f"llm-{next(_REQUEST_COUNTER)}" for _ in prompts]
        wanted = set(ids)
        try:
            for rid, prompt, p in zip(ids, prompts, params):
                engine.add_request(rid, prompt, p)
            results: dict[str, RequestOutput] = {}
            bar = _progress(len(prompts)) if use_tqdm else None
            while len(results) < len(prompts):
                for out in engine.step(finished_only=True):
                    if out.request_id in wanted:
                        results[out.request_id] = out
                        if bar is not None:
                            bar.update(1)
            if bar is not None:
                bar.close()
        except BaseException:
            for rid in ids:
                engine.abort_request(rid)
            raise
        return [results[rid] for rid in ids]

    def chat(self, conversations: list[dict] | list[list[dict]],
             sampling_params: SamplingParams | list[SamplingParams] | None = None,
             use_tqdm: bool = False) -> list[RequestOutput]:
        if self.tokenizer is None:
            raise ValueError("chat needs a tokenizer with a chat template")
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]
        prompts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                   for c in conversations]
        # the template already holds the special tokens (BOS etc.), so do not add them again
        ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        outs = self.generate(ids, sampling_params, use_tqdm)
        for out, text in zip(outs, prompts):
            out.prompt = text
        return outs


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="requests", dynamic_ncols=True)
