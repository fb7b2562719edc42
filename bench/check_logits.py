"""kvant's engine on the GPU against HF transformers on the SAME random weights at a real model's shape.

For each format: build the HF model from a config with random weights, copy them into kvant's model (for FP8/INT8/
INT4: quantize kvant's copy round-to-nearest and give HF the dequantized weights, so both compute the same function
up to activation quantization), generate greedily with kvant (paged KV cache, Triton kernels, CUDA graphs, batch of
all prompts), then run HF teacher-forced over prompt + kvant's tokens and compare, at every generated position:
  - |kvant logprob - HF logprob| of the chosen token,
  - HF's argmax gap of the chosen token (0 when kvant picked HF's argmax).
Usage: python bench/check_logits.py --config bench/configs/llama-3.1-8b.json --quant bf16,int4 [--kernel-arch sm_86]
"""
import argparse
import json
import time
from pathlib import Path

import torch


def hf_model(config_path: Path, seed: int, device: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads(config_path.read_text())
    cfg = AutoConfig.for_model(raw.pop("model_type"), **{k: v for k, v in raw.items() if k != "architectures"})
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    with torch.no_grad():  # HF's default init (std 0.02) gives near-uniform logits; widen it so argmax is meaningful
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 / p.shape[1] ** 0.5 if "embed" not in name else 1.0)
    return model.eval()


def dequantized(module) -> torch.Tensor:
    from kvant.engine import quant_linear as QL
    from kvant.kernels.int4_pack import unpack_int4
    from kvant.quantize.primitives import dequantize_int4

    if isinstance(module, QL.W4A16Linear):
        weight_packed, weight_scale, _ = module.checkpoint_tensors()  # the inverse of the repack made at load
        q = unpack_int4(weight_packed, module.in_features)
        return dequantize_int4(q, weight_scale, None, module.group_size)
    return module.weight.float() * module.weight_scale.float().reshape(-1, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--quant", default="bf16")
    ap.add_argument("--kernel-arch", default=None)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()

    from kvant.engine.config import load_config_file
    from kvant.engine.llm import LLM
    from kvant.engine.loader import build_model, load_weights
    from kvant.engine.model import stacked_output_sizes, stacked_parts
    from kvant.engine.sampling_params import SamplingParams
    from kvant.quantize.rtn import quantize_model_rtn

    dtype = getattr(torch, a.dtype)
    hf = hf_model(a.config, a.seed, a.device).to(dtype)
    state = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    g = torch.Generator().manual_seed(a.seed)
    vocab = hf.config.vocab_size
    prompts = [torch.randint(0, min(vocab, 10000), (int(torch.randint(8, 200, (1,), generator=g)),),
                             generator=g).tolist() for _ in range(a.prompts)]
    cfg = load_config_file(a.config)
    for quant in a.quant.split(","):
        t0 = time.perf_counter()
        model = build_model(cfg, dtype, a.device)
        load_weights(model, state.items())
        if quant != "bf16":
            quantize_model_rtn(model, quant)
            with torch.no_grad():  # HF computes with the weights kvant's kernels dequantize
                for name, module in model.named_modules():
                    if name.startswith("model.layers.") and hasattr(module, "in_features") and not isinstance(
                            module, torch.nn.Linear):
                        w = dequantized(module).to(dtype)
                        if name.rpartition(".")[2] in stacked_output_sizes(cfg):  # kvant's merged qkv / gate_up
                            for part, first, rows in stacked_parts(cfg, name):
                                hf.get_submodule(part).weight.copy_(w[first:first + rows])
                        else:
                            hf.get_submodule(name).weight.copy_(w)
        llm = LLM.from_model(model, None, max_model_len=1024, max_num_seqs=32, gpu_memory_utilization=0.5,
                             kernel_arch=a.kernel_arch)
        ready = time.perf_counter() - t0
        outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=a.new, ignore_eos=True, logprobs=0))
        diffs, gaps, hits = [], [], 0
        for p, o in zip(prompts, outs):
            toks = o.outputs[0].token_ids
            ids = torch.tensor([p + toks], device=a.device)
            with torch.no_grad():
                lp = torch.log_softmax(hf(ids).logits[0].float(), -1)[len(p) - 1:len(p) - 1 + len(toks)]
            for t, (tok, d) in enumerate(zip(toks, o.outputs[0].logprobs)):
                diffs.append(abs(d[tok] - lp[t, tok].item()))
                gap = (lp[t].max() - lp[t, tok]).item()
                gaps.append(gap)
                hits += gap == 0
        n = len(gaps)
        row = dict(config=a.config.stem, quant=quant, kernel_arch=a.kernel_arch or "native",
                   kernel_path=getattr(llm.engine.kernel_path, "gemm", None), graphs=len(llm.engine.runner.graphs),
                   positions=n, argmax_agree=round(hits / n, 4), max_argmax_gap=round(max(gaps), 4),
                   mean_abs_logprob_diff=round(sum(diffs) / n, 4), max_abs_logprob_diff=round(max(diffs), 4),
                   ready_s=round(ready, 1), gpu=torch.cuda.get_device_name() if a.device == "cuda" else "cpu")
        print(json.dumps(row), flush=True)
        del llm, model
        if a.device == "cuda":
            torch.cuda.empty_cache()
        if quant != "bf16":  # restore HF's original weights for the next format
            hf.load_state_dict(state)


if __name__ == "__main__":
    main()
