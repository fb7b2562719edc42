"""The measured peer for `kvant bench throughput --peer hf`: HF transformers' own continuous batching (paged SDPA
attention, CUDA graphs where available) on random weights of the same config, fed the same token-id workload."""
import json
import time
from pathlib import Path

import torch

from kvant.bench.workloads import Request
from kvant.artifact.errors import KvantError


def hf_model_from_config(config_path: Path, device: str, dtype: torch.dtype, seed: int = 0):
    """Random weights at the config's shapes (speed does not depend on their values: EOS is disabled)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads(Path(config_path).read_text(encoding="utf-8"))
    model_type = raw.pop("model_type", None)
    if model_type is None:
        raise KvantError(f"{config_path}: no model_type, cannot build the transformers peer")
    raw.pop("architectures", None)
    raw.pop("torch_dtype", None)
    config = AutoConfig.for_model(model_type, **raw)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def run_hf_peer(model, reqs: list[Request], *, cuda_graphs: bool | None = None, warmup: bool = True) -> dict:
    """Generate every request with transformers' continuous batching; output tokens per second over the span from
    the first request's creation to the last one's end (HF's own benchmark definition)."""
    from transformers import GenerationConfig
    from transformers.generation import ContinuousBatchingConfig

    gen = GenerationConfig(max_new_tokens=max(r.max_tokens for r in reqs), do_sample=False, eos_token_id=-1)
    kwargs = {} if cuda_graphs is None else {"use_cuda_graph": cuda_graphs}
    done = {}
    t0 = time.perf_counter()
    with model.continuous_batching_context_manager(generation_config=gen, warmup=warmup,
                                                   continuous_batching_config=ContinuousBatchingConfig(**kwargs)) as mgr:
        started = time.perf_counter()
        for i, r in enumerate(reqs):
            mgr.add_request(input_ids=r.prompt_token_ids, request_id=f"r{i}", max_new_tokens=r.max_tokens,
                            eos_token_id=-1, record_timestamps=True)
        while len(done) < len(reqs):
            result = mgr.get_result(timeout=1)
            if result is None:
                if not mgr.is_running():
                    raise KvantError("the transformers continuous-batching thread stopped")
            elif result.is_finished():
                done[result.request_id] = result
        wall = time.perf_counter() - started
    outs = [done[f"r{i}"] for i in range(len(reqs))]
    n_out = sum(len(o.generated_tokens) for o in outs)
    expected = sum(r.max_tokens for r in reqs)
    if n_out != expected:
        raise KvantError(f"the transformers peer generated {n_out} tokens, the workload asks for {expected}")
    span = max(o.lifespan[1] for o in outs) - min(o.created_time for o in outs)
    return {"peer": "transformers-cb", "output_tokens": n_out, "wall_s": wall, "span_s": span,
            "output_tok_per_s": n_out / span, "setup_s": started - t0,
            "cuda_graphs": "auto" if cuda_graphs is None else cuda_graphs}
