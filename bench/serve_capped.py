"""One start of kvant's engine on an artifact under a --gpu-memory cap: where start-up time went, the memory plan,
time to the first token, and optionally W1 through the capped engine with its peak CUDA memory.

    python bench/serve_capped.py ART --gpu-memory 24GiB [--w1] --json OUT.json
    python bench/serve_capped.py BIG --gpu-memory 12GiB --expect-refusal --json OUT.json

With --expect-refusal the start must fail with kvant's one-line message before any CUDA memory is allocated; the
message, the time to it and the CUDA memory reserved at that point are recorded. On a machine without CUDA it runs on
the CPU (no cap, no CUDA memory figures), which is how the script is checked before a GPU run.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact")
    p.add_argument("--gpu-memory", default="24GiB")
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--w1", action="store_true")
    p.add_argument("--w1-limit", type=int, help="only W1's first N requests (CPU checks)")
    p.add_argument("--expect-refusal", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from kvant.artifact.errors import KvantError
    from kvant.engine import LLM, SamplingParams
    from harness.workloads import workload  # bench/harness (installed as kvant.bench; this runs beside it)

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    kwargs = {"gpu_memory": args.gpu_memory} if cuda else {}
    t0 = time.perf_counter()
    if args.expect_refusal:
        try:
            LLM(args.artifact, max_model_len=args.max_model_len, skip_tokenizer_init=True, **kwargs)
        except KvantError as exc:
            r = {"device": torch.cuda.get_device_name() if cuda else "cpu", "gpu_memory": args.gpu_memory,
                 "refused": str(exc), "refused_after_s": round(time.perf_counter() - t0, 2),
                 "cuda_reserved_bytes": torch.cuda.memory_reserved() if cuda else None}
            print(json.dumps(r), flush=True)
            if args.json:
                args.json.write_text(json.dumps(r, indent=1))
            sys.exit(0 if not cuda or r["cuda_reserved_bytes"] == 0 else 1)
        sys.exit(f"{args.artifact} was not refused under --gpu-memory {args.gpu_memory}")
    llm = LLM(args.artifact, max_model_len=args.max_model_len, skip_tokenizer_init=True, **kwargs)
    ready = time.perf_counter() - t0
    engine = llm.engine
    plan = engine.memory_plan
    llm.generate([[1000, 2000, 3000, 4000] * 8], SamplingParams(max_tokens=1, temperature=0.0))
    first = time.perf_counter() - t0
    import psutil  # the process's own start: python, torch and kvant imports count toward a start too

    process_first = time.time() - psutil.Process().create_time()
    r = {"device": torch.cuda.get_device_name() if cuda else "cpu", "gpu_memory": args.gpu_memory,
         "ready_s": round(ready, 2),
         "first_token_s": round(first, 2), "process_first_token_s": round(process_first, 2), "startup_times": {k: round(v, 2) for k, v in engine.startup_times.items()},
         "plan": plan.breakdown(), "weights_gib": round(plan.weights_bytes / 2**30, 2),
         "activation_gib": round(plan.activation_bytes / 2**30, 3), "kv_tokens": plan.kv_tokens,
         "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    if args.w1:
        # correctness: the engine's greedy token equals the argmax of the plain reference forward (no paged cache)
        model = engine.runner.model
        prompts = [list(range(100 + 7 * i, 164 + 7 * i)) for i in range(4)]
        got = [o.outputs[0].token_ids[0] for o in llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0))]
        want = []
        with torch.inference_mode():
            for ids in prompts:
                x = torch.tensor(ids, device=dev)
                want.append(int(model.compute_logits(model(x, torch.arange(len(ids), device=dev))[-1:]).argmax()))
        r["greedy_equal_reference"] = got == want
        reqs = workload("W1", args.w1_limit)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        outs = llm.generate([q.prompt_token_ids for q in reqs],
                            [SamplingParams(max_tokens=q.max_tokens, temperature=0.0, ignore_eos=True) for q in reqs])
        wall = time.perf_counter() - t
        n = sum(len(o.outputs[0].token_ids) for o in outs)
        r.update(w1_output_tokens=n, w1_expected=sum(q.max_tokens for q in reqs), w1_s=round(wall, 1),
                 w1_tok_s=round(n / wall, 1), preemptions=llm.stats().num_preemptions)
        if cuda:
            free, total = torch.cuda.mem_get_info()  # the card's use after W1, CUDA context and graphs included
            r.update(w1_peak_allocated_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                     w1_peak_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 2),
                     card_used_after_gib=round((total - free) / 2**30, 2))
        print(json.dumps(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
