"""On the GPU: an absolute KV-cache budget is honoured (reported KV size vs the budget, peak memory vs weights + KV +
reported overheads), and the time to ready (build, KV pool, CUDA graphs) of a quantized 8B-shaped model.

    python bench/edge_check.py --config bench/configs/llama-3.1-8b.json --quant int4 --kv-cache-memory 4GiB
"""
import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--quant", default="int4")
    ap.add_argument("--kv-cache-memory", default="4GiB")
    ap.add_argument("--kernel-arch", default=None)
    a = ap.parse_args()
    from kvant.engine.config import load_config_file
    from kvant.engine.llm import LLM
    from kvant.engine.loader import dummy_model
    from kvant.engine.config import parse_size
    from kvant.engine.sampling_params import SamplingParams
    from kvant.quantize.rtn import quantize_model_rtn

    cfg = load_config_file(a.config)
    model = dummy_model(cfg, dtype=torch.bfloat16, device="cuda")
    if a.quant != "bf16":
        quantize_model_rtn(model, a.quant)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    llm = LLM.from_model(model, None, kv_cache_memory=a.kv_cache_memory, kernel_arch=a.kernel_arch,
                         max_model_len=8192, max_num_seqs=64)
    ready = time.perf_counter() - t0
    runner = llm.engine.runner
    plan = llm.engine.memory_plan
    kv_bytes = runner.kv_cache.numel() * runner.kv_cache.element_size()
    llm.generate([[i % 1000 + 1 for i in range(2000)]] * 8, SamplingParams(max_tokens=64, ignore_eos=True))
    peak = torch.cuda.max_memory_allocated()
    budget = parse_size(a.kv_cache_memory)
    row = dict(config=a.config.stem, quant=a.quant, kernel_path=getattr(llm.engine.kernel_path, "gemm", None),
               breakdown=plan.breakdown(), kv_cache_bytes=kv_bytes, kv_budget_bytes=budget,
               kv_vs_budget=round(kv_bytes / budget, 4), weights_bytes=plan.weights_bytes,
               peak_allocated_bytes=peak, peak_over_weights_plus_kv_plus_overheads=round(
                   (peak - before + plan.weights_bytes) / (plan.weights_bytes + kv_bytes + plan.activation_bytes
                                                           + plan.cuda_graph_bytes), 4),
               graphs=len(runner.graphs), ready_s=round(ready, 2), gpu=torch.cuda.get_device_name())
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
