"""`kvant bench throughput | latency | profile`: seeded workloads against the roofline measured on the same card."""
import argparse
import json
import statistics
import time
from pathlib import Path

QUANTS = ("bf16", "fp8", "int8", "int4")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="throughput and latency against the roofline",
                       description="Benchmark kvant's engine on seeded workloads; prints % of the roofline.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name, text in (("throughput", "offline throughput on a workload (W1..W5)"),
                       ("latency", "decode TPOT and TTFT at batch sizes 1..64"),
                       ("profile", "one decode step: kernels, GPU time, host time, top kernels")):
        k = kinds.add_parser(name, help=text)
        k.add_argument("--model", required=True,
                       help="a config .json (random weights, e.g. bench/configs/llama-3.1-8b.json) or a model/artifact")
        k.add_argument("--quant", choices=QUANTS, default="bf16",
                       help="for a config: quantize the random weights round-to-nearest to this format")
        k.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default="auto")
        k.add_argument("--kernel-arch", default=None, help="force a smaller card's kernel paths, e.g. sm_86")
        k.add_argument("--max-num-seqs", type=int, default=256)
        k.add_argument("--max-num-batched-tokens", type=int, default=8192)
        k.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
        k.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                       help="launch each decode step before the last one's tokens are read (default: on with graphs)")
        k.add_argument("--json", type=Path, default=None, help="write the results here")
        if name == "throughput":
            k.add_argument("--workload", default="W1", choices=("W1", "W2", "W3", "W4", "W5"))
            k.add_argument("--limit", type=int, default=None, help="only the first N requests")
            k.add_argument("--peer", choices=("hf",), default=None,
                           help="then run HF transformers' continuous batching on the same config and workload "
                                "(random weights; slow) and print kvant's ratio to it")
        elif name == "latency":
            k.add_argument("--batch-sizes", default="1,4,16,64")
            k.add_argument("--input-len", type=int, default=128)
            k.add_argument("--output-len", type=int, default=128)
            k.add_argument("--repeats", type=int, default=3, help="runs per batch size (medians kept)")
        else:
            k.add_argument("--batch-sizes", default="1,64")
            k.add_argument("--input-len", type=int, default=128)
            k.add_argument("--steps", type=int, default=20, help="timed decode steps (median kept)")
            k.add_argument("--top", type=int, default=10, help="kernels listed, most time first")
    s = kinds.add_parser("serve", help="drive a running `kvant serve` over HTTP (vLLM's serving metrics)")
    s.add_argument("--base-url", default="http://127.0.0.1:8000", help="the server, without /v1")
    s.add_argument("--served-model", default=None, help="model name in requests (default: the first /v1/models)")
    s.add_argument("--api-key", default=None)
    s.add_argument("--workload", default="W4", choices=("W1", "W2", "W3", "W4", "W5"))
    s.add_argument("--limit", type=int, default=None, help="only the first N requests")
    s.add_argument("--request-rate", type=float, default=float("inf"),
                   help="Poisson arrivals at this many requests/s (default: all at once)")
    s.add_argument("--max-concurrency", type=int, default=None, help="at most this many requests in flight")
    s.add_argument("--slo-ttft-ms", type=float, default=None, help="goodput: TTFT objective")
    s.add_argument("--slo-tpot-ms", type=float, default=None, help="goodput: TPOT objective")
    s.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    s.add_argument("--json", type=Path, default=None, help="write the results here")
    s.set_defaults(func=run)
    p.set_defaults(func=run)


def build_llm(args):
    import torch

    from kvant.engine.config import load_config_file
    from kvant.engine.llm import LLM
    from kvant.engine.loader import dummy_model

    engine_kwargs = dict(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                         enforce_eager=args.enforce_eager, kv_cache_dtype=args.kv_cache_dtype,
                         kernel_arch=args.kernel_arch, async_scheduling=getattr(args, "async_scheduling", None))
    if args.kind in ("latency", "profile"):
        engine_kwargs["enable_prefix_caching"] = False
    model_arg = Path(args.model)
    if model_arg.suffix == ".json":
        cfg = load_config_file(model_arg)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = dummy_model(cfg, dtype=torch.bfloat16 if device == "cuda" else torch.float32, device=device)
        if args.quant != "bf16":
            from kvant.quantize.rtn import quantize_model_rtn

            quantize_model_rtn(model, args.quant)
        return LLM.from_model(model, tokenizer=None, **engine_kwargs), cfg
    llm = LLM(args.model, **engine_kwargs)
    return llm, llm.model_config


def _weights_quant(args, cfg) -> str:
    if Path(args.model).suffix == ".json":
        return args.quant
    from kvant.artifact.schemes import BF16, SCHEME_INFO, scheme_of

    scheme = scheme_of(cfg.quantization_config)
    return BF16 if scheme == BF16 else SCHEME_INFO[scheme].weight_tag


def run_serve(args) -> int:
    import asyncio

    from kvant.bench.loadgen import run_load
    from kvant.bench.workloads import workload

    res = asyncio.run(run_load(args.base_url, workload(args.workload, args.limit), model=args.served_model,
                               request_rate=args.request_rate, max_concurrency=args.max_concurrency,
                               api_key=args.api_key, seed=args.seed, slo_ttft_ms=args.slo_ttft_ms,
                               slo_tpot_ms=args.slo_tpot_ms))
    print(f"{args.workload}: {res['completed']}/{res['requests']} requests in {res['duration_s']:.2f} s: "
          f"{res['output_tok_per_s']:,.0f} output tok/s, {res['request_throughput']:.2f} req/s"
          + (f", goodput {res['goodput_req_per_s']:.2f} req/s" if res["goodput_req_per_s"] is not None else ""))
    for name in ("ttft", "tpot", "itl", "e2e"):
        st = res[name]
        if st["mean_ms"] is not None:
            print(f"  {name.upper():4s} mean {st['mean_ms']:.1f} ms  p50 {st['p50_ms']:.1f}  p90 {st['p90_ms']:.1f}  "
                  f"p99 {st['p99_ms']:.1f}")
    for err in res["errors"]:
        print(f"  failed: {err}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0 if res["failed"] == 0 else 1


def run(args) -> int:
    if args.kind == "serve":
        return run_serve(args)
    if args.kind == "profile":
        return run_profile(args)

    import torch

    from kvant.bench import roofline as R
    from kvant.bench.workloads import workload
    from kvant.engine.memory import kv_bytes_per_token
    from kvant.engine.sampling_params import SamplingParams

    if getattr(args, "peer", None) and Path(args.model).suffix != ".json":
        from kvant.artifact.errors import KvantError

        raise KvantError("--peer hf needs --model as a config .json (the peer runs random weights of that shape)")
    llm, cfg = build_llm(args)
    quant = _weights_quant(args, cfg)
    kv = "fp8" if args.kv_cache_dtype == "fp8" else "bf16"
    ceil = R.measure_ceilings() if torch.cuda.is_available() else None
    results = {"device": ceil.device if ceil else "cpu", "model": str(args.model), "quant": quant, "kv_cache": kv}
    if args.kind == "throughput":
        reqs = workload(args.workload, args.limit)
        params = [SamplingParams(temperature=0.6, ignore_eos=True, max_tokens=r.max_tokens) for r in reqs]
        llm.generate([reqs[0].prompt_token_ids], SamplingParams(max_tokens=8, ignore_eos=True))  # warm-up
        t0 = time.perf_counter()
        outs = llm.generate([r.prompt_token_ids for r in reqs], params)
        wall = time.perf_counter() - t0
        n_out = sum(len(o.outputs[0].token_ids) for o in outs)
        expected = sum(r.max_tokens for r in reqs)
        if n_out != expected:
            raise RuntimeError(f"generated {n_out} tokens, the workload asks for {expected}")
        n_in = sum(len(r.prompt_token_ids) for r in reqs)
        results.update(workload=args.workload, requests=len(reqs), output_tokens=n_out, wall_s=wall,
                       requests_per_s=len(reqs) / wall, output_tok_per_s=n_out / wall,
                       total_tok_per_s=(n_in + n_out) / wall)
        line = (f"{args.workload}: {len(reqs)} requests, {n_out:,} output tokens in {wall:.2f} s: "
                f"{n_out / wall:,.0f} output tok/s, {(n_in + n_out) / wall:,.0f} total tok/s, "
                f"{len(reqs) / wall:.2f} req/s")
        if ceil:
            ideal = R.roofline_seconds(reqs, cfg, quant, kv, ceil, args.max_num_seqs)
            results.update(roofline_s=ideal, roofline_tok_per_s=n_out / ideal, pct_of_roofline=100 * ideal / wall)
            line += f"; roofline {ideal:.2f} s ({n_out / ideal:,.0f} tok/s): {100 * ideal / wall:.0f}% of roofline"
        print(line)
        if args.peer == "hf":
            results["peer"] = _run_peer(args, llm, reqs)
            results["ratio_to_peer"] = results["output_tok_per_s"] / results["peer"]["output_tok_per_s"]
            print(f"peer {results['peer']['peer']}: {results['peer']['output_tok_per_s']:,.0f} output tok/s; "
                  f"kvant is {results['ratio_to_peer']:.1f}x")
    else:
        rows = []
        for bs in [int(x) for x in args.batch_sizes.split(",")]:
            row = latency_row(llm, bs, args.input_len, args.output_len, getattr(args, "repeats", 3))
            if ceil:
                ctx = args.input_len + args.output_len // 2
                step_bytes = R.model_bytes(cfg, quant) + bs * ctx * kv_bytes_per_token(cfg, R.KV_BYTES[kv])
                floor = step_bytes / ceil.copy_bytes_per_s
                row.update(roofline_tpot_ms=floor * 1e3, pct_of_roofline=100 * floor / (row["tpot_ms"] / 1e3))
            rows.append(row)
            print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                            if not k.endswith("_runs")))
        results["rows"] = rows
    if ceil:
        results["ceilings"] = {"copy_GBps": ceil.copy_bytes_per_s / 1e9, "bf16_TFLOPs": ceil.bf16_flops / 1e12,
                               "fp8_TFLOPs": (ceil.fp8_flops or 0) / 1e12, "int8_TOPs": (ceil.int8_ops or 0) / 1e12}
        print(f"ceilings on {ceil.device}: copy {ceil.copy_bytes_per_s / 1e9:,.0f} GB/s, "
              f"bf16 {ceil.bf16_flops / 1e12:,.0f} TFLOP/s, fp8 {(ceil.fp8_flops or 0) / 1e12:,.0f} TFLOP/s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def latency_row(llm, bs: int, input_len: int, output_len: int, repeats: int = 3) -> dict:
    """TTFT and TPOT at batch size bs: TPOT = (time for output_len tokens - time for one) / (output_len - 1), each
    the median of `repeats` alternating runs, after a warm-up run at this batch size with the same sampling (it
    compiles every kernel variant both runs use). A single slow sample of either would otherwise move TPOT by its
    excess / (output_len - 1). Prefix caching is off for latency runs, so every run prefills its prompts in full."""
    from kvant.engine.sampling_params import SamplingParams

    prompts = [[(7 * i + j) % 10000 for j in range(input_len)] for i in range(bs)]
    llm.generate(prompts, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    ttfts, totals = [], []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        llm.generate(prompts, SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
        ttfts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        llm.generate(prompts, SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True))
        totals.append(time.perf_counter() - t0)
    ttft, total = statistics.median(ttfts), statistics.median(totals)
    return {"batch": bs, "ttft_ms": ttft * 1e3, "tpot_ms": (total - ttft) / (output_len - 1) * 1e3,
            "ttft_ms_runs": [t * 1e3 for t in ttfts], "total_ms_runs": [t * 1e3 for t in totals]}


def run_profile(args) -> int:
    from kvant.bench.profile import print_profile, profile_decode

    llm, _ = build_llm(args)
    rows = []
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        rows.append(profile_decode(llm.engine, bs, args.input_len, args.steps, args.top))
        print_profile(rows[-1])
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "quant": args.quant, "rows": rows}, indent=2) + "\n")
    return 0


def _run_peer(args, llm, reqs) -> dict:
    import gc

    import torch

    from kvant.bench.peer_hf import hf_model_from_config, run_hf_peer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    del llm.engine  # free kvant's weights and KV pool before the peer allocates its own
    gc.collect()  # the engine's parts refer to each other: only the cycle collector frees them
    if device == "cuda":
        torch.cuda.empty_cache()
        print(f"peer: kvant's engine freed, {torch.cuda.memory_allocated() / 2**30:.1f} GiB still allocated")
    model = hf_model_from_config(Path(args.model), device, torch.bfloat16 if device == "cuda" else torch.float32)
    return run_hf_peer(model, reqs, cuda_graphs=True if device == "cuda" else None, warmup=device == "cuda")
