"""One engine per format, timed twice: decode latency (TPOT at the given batch sizes) and offline throughput (W1,
optionally its first N requests), on random weights of a config, in one process so that the model is built and
quantized once (a device call's minutes are scarce). Same code paths as `kvant bench latency` and `kvant bench
throughput`, whose runner it reuses.

    python -P bench/engine_quant_pass.py --model bench/configs/llama-3.1-8b.json --quant int4 --out DIR \
        [--batch-sizes 1,64 | --batch-sizes ""] [--output-len 32] [--limit 64] [--kv-cache-dtype fp8]
"""
import argparse
from argparse import Namespace
from pathlib import Path

from kvant.tui.commands import bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--quant", choices=bench.QUANTS, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None, help="W1's first N requests (default: all 256)")
    ap.add_argument("--kv-cache-dtype", default="auto", help="auto (the model's dtype) or fp8")
    a = ap.parse_args()
    common = dict(model=a.model, quant=a.quant, kv_cache_dtype=a.kv_cache_dtype, kernel_arch=None, max_num_seqs=256,
                  max_num_batched_tokens=8192, enforce_eager=False)
    lat = Namespace(kind="latency", batch_sizes=a.batch_sizes, input_len=128, output_len=a.output_len,
                    json=a.out / f"latency-{a.quant}.json", **common)
    built = bench.build_llm(lat)  # latency's engine (prefix caching off); W1's random prompts share no prefix
    bench.build_llm = lambda args: built
    if a.batch_sizes:  # --batch-sizes "": W1 only
        bench.run(lat)
    bench.run(Namespace(kind="throughput", workload="W1", limit=a.limit, peer=None,
                        json=a.out / f"w1-{a.quant}.json", **common))


if __name__ == "__main__":
    main()
