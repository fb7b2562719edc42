"""GPTQ's column loop on the CPU, on the default model's four quantized matrices of one decoder layer (stacked q/k/v
960 x 576, o_proj 576 x 576, stacked gate/up 3072 x 576, down_proj 576 x 1536; INT4 group 64, a Hessian from 1,024
random tokens with a few loud channels), against an earlier gptq.py:

    git show 5372fbe:quantize/gptq.py > /tmp/gptq_before.py
    OMP_NUM_THREADS=2 python -P bench/gptq_speed.py --reference /tmp/gptq_before.py --rounds 3

Prints seconds per layer (best of --rounds, alternating the two) and, per matrix, the share of entries whose
quantized value differs and both GPTQ losses: the same algorithm in another summation order may round a rare entry
that sits on a rounding boundary the other way.
"""
import argparse
import importlib.util
import json
import time

import torch

from kvant.quantize import gptq as current
from kvant.quantize.primitives import int4_qparams

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]
GROUP = 64


def cases():
    torch.manual_seed(0)
    out = []
    for n, k in SHAPES:
        w = torch.randn(n, k) * 0.02
        x = torch.randn(1024, k)
        x[:, :8] *= 10
        scale, _ = int4_qparams(w, GROUP)
        out.append((w, 2 * x.T @ x / x.shape[0], scale.repeat_interleave(GROUP, 1)))
    return out


def timed(module, data):
    t = time.perf_counter()
    results = [module.gptq_quantize(w, h, s) for w, h, s in data]
    return time.perf_counter() - t, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", help="an earlier quantize/gptq.py to time against")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    data = cases()
    modules = {"current": current}
    if args.reference:
        spec = importlib.util.spec_from_file_location("gptq_reference", args.reference)
        modules["reference"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules["reference"])
    best, results = {}, {}
    for _ in range(args.rounds):
        for name, module in reversed(modules.items()):
            s, results[name] = timed(module, data)
            best[name] = min(best.get(name, s), s)
    report = {"threads": torch.get_num_threads(), "s_per_layer": {k: round(v, 3) for k, v in best.items()}}
    if "reference" in results:
        report["ratio"] = round(best["current"] / best["reference"], 3)
        report["matrices"] = [
            {"shape": list(shape), "differing_entries": float((a.weight != b.weight).float().mean()),
             "loss_current": round(a.loss, 6), "loss_reference": round(b.loss, 6)}
            for shape, a, b in zip(SHAPES, results["current"], results["reference"])]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
