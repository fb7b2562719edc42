"""CPU decode speed of the engine on a small random Llama-shaped model (the CPU path must not get slower).

Usage: python bench/cpu_decode.py [--batch 8] [--new 64] [--reps 3]  -> one JSON line (best of reps)
"""
import argparse
import json
import time

import torch

from kvant.engine.config import ModelConfig
from kvant.engine.llm import LLM
from kvant.engine.loader import dummy_model
from kvant.engine.sampling_params import SamplingParams

CFG = ModelConfig(architecture="LlamaForCausalLM", vocab_size=8192, hidden_size=512, intermediate_size=1536,
                  num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                  max_position_embeddings=1024, max_model_len=512, tie_word_embeddings=False, eos_token_ids=(1,))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    llm = LLM.from_model(dummy_model(CFG, dtype=torch.float32, seed=0), None, num_kv_blocks=256, max_model_len=512)
    prompts = [[(13 * i + j) % CFG.vocab_size for j in range(a.prompt)] for i in range(a.batch)]
    greedy = SamplingParams(temperature=0, max_tokens=a.new, ignore_eos=True)
    one = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))  # warm-up
    best = None
    for _ in range(a.reps):
        t0 = time.perf_counter()
        llm.generate(prompts, one)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        outs = llm.generate(prompts, greedy)
        total = time.perf_counter() - t0
        decode_tok_s = a.batch * (a.new - 1) / max(total - prefill, 1e-9)
        best = max(best or 0.0, decode_tok_s)
    print(json.dumps({"device": "cpu", "threads": a.threads, "batch": a.batch, "new": a.new,
                      "decode_tok_per_s": round(best, 1), "first_tokens": outs[0].outputs[0].token_ids[:8]}))


if __name__ == "__main__":
    main()
