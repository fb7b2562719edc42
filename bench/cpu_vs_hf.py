"""CPU decode speed, kvant against HF transformers on the same weights and thread count, pairs run back to back.

    python bench/cpu_vs_hf.py --threads 2 --new-tokens 128 --rounds 3 --int4 ARTIFACT --json out.json

One greedy request (a short chat prompt, EOS ignored) per run; tok/s = new tokens / wall time of the whole call
(prefill included, for both). Cases: the base model in fp32 and bf16, and an INT4 (W4A16) artifact, which HF loads
through compressed-tensors. Each round runs every case's kvant then HF, so a neighbour's load on a shared machine
hits both sides of a pair alike; the figure kept per side is the best round. Both decode greedily, so each case also
reports the first new token where their continuations differ (None: all equal).
"""
import argparse
import gc
import json
import time
from pathlib import Path

import torch

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]


def kvant_runner(path: Path, dtype: str):
    from kvant.engine import LLM, SamplingParams

    llm = LLM(str(path), dtype=dtype, device="cpu", max_model_len=1024, enable_prefix_caching=False)
    text = llm.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    ids = llm.tokenizer(text, add_special_tokens=False)["input_ids"]

    def run(n: int) -> list[int]:
        out = llm.generate([ids], SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True))
        return list(out[0].outputs[0].token_ids)

    return run


def hf_runner(path: Path, dtype: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    kwargs = {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()
    text = tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")  # the same ids kvant gets

    def run(n: int) -> list[int]:
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return out[0, ids["input_ids"].shape[1]:].tolist()

    return run, str(next(model.parameters()).dtype)


def timed(run, n: int, tokens: dict, side: str) -> float:
    t0 = time.perf_counter()
    got = run(n)
    seconds = time.perf_counter() - t0
    if len(got) != n:
        raise RuntimeError(f"asked for {n} new tokens, got {len(got)}")
    tokens[side] = got
    return n / seconds


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--int4", type=Path, help="a W4A16 artifact of the same model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", default="fp32,bf16,int4")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from kvant.engine.registry import resolve_model

    base = resolve_model(args.model)
    cases = {"fp32": (base, "float32", "float32"), "bf16": (base, "bfloat16", "bfloat16")}
    if args.int4:
        cases["int4"] = (args.int4, "auto", "auto")
    wanted = [c for c in args.cases.split(",") if c in cases]
    results = {}
    for case in wanted:
        path, kvant_dtype, hf_dtype = cases[case]
        kvant = kvant_runner(path, kvant_dtype)
        hf, hf_dtype_used = hf_runner(path, hf_dtype)
        kvant(8), hf(8)  # warm-up: first-call allocations and lazy inits on both sides
        rows, tokens = [], {}
        for _ in range(args.rounds):
            rows.append((timed(kvant, args.new_tokens, tokens, "kvant"), timed(hf, args.new_tokens, tokens, "hf")))
            print(f"{case}: kvant {rows[-1][0]:.1f} tok/s, HF {rows[-1][1]:.1f} tok/s", flush=True)
        k, h = max(r[0] for r in rows), max(r[1] for r in rows)
        # greedy on both sides: the index of the first new token where they differ (None: all equal)
        diff = first_difference(tokens["kvant"], tokens["hf"])
        results[case] = {"kvant_tok_s": k, "hf_tok_s": h, "ratio": k / h, "rounds": rows, "hf_dtype": hf_dtype_used,
                         "first_token_difference": diff}
        print(f"{case}: best kvant {k:.1f}, HF {h:.1f}, ratio {k / h:.2f}, first token difference {diff}",
              flush=True)
        del kvant, hf
        gc.collect()
    meta = {"threads": args.threads, "new_tokens": args.new_tokens, "rounds": args.rounds, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                               time.gmtime())}
    import transformers

    meta["transformers"] = transformers.__version__
    print(json.dumps({"meta": meta, "results": {c: {k: v for k, v in r.items() if k != "rounds"}
                                                for c, r in results.items()}}, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
