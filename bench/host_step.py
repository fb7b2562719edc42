"""Host time of a decode step outside the model runner (schedule, postprocess, outputs), on the CPU with a tiny
random model so that the Python around the model is what shows. 64 requests of 512 prompt tokens, greedy.

    python -P bench/host_step.py [--finished-only] [--steps 200] [--profile]
"""
import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

import torch

from kvant.engine import LLM, SamplingParams
from kvant.engine.config import ModelConfig
from kvant.engine.loader import dummy_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--finished-only", action="store_true", help="step(finished_only=True), as LLM.generate calls it")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = json.loads((Path(__file__).parent / "configs" / "qwen3-0.6b.json").read_text())
    cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
               num_key_value_heads=1, head_dim=32, vocab_size=512)
    folder = Path(tempfile.mkdtemp())
    (folder / "config.json").write_text(json.dumps(cfg))
    engine = LLM.from_model(dummy_model(ModelConfig.from_pretrained(folder), dtype=torch.float32), None,
                            max_num_seqs=args.batch, max_model_len=2048).engine
    params = SamplingParams(temperature=0, max_tokens=args.steps + 10, ignore_eos=True)
    for i in range(args.batch):
        engine.add_request(str(i), [(7 * i + j) % 500 for j in range(512)], params)
    while any(s.num_output_tokens == 0 for st in engine.requests.values() for s in st.seqs):
        engine.step()
    runner_s = [0.0]
    run = engine.runner.run

    def timed_run(*a, **k):
        t = time.perf_counter()
        out = run(*a, **k)
        runner_s[0] += time.perf_counter() - t
        return out

    engine.runner.run = timed_run
    prof = cProfile.Profile()
    start = time.perf_counter()
    if args.profile:
        prof.enable()
    step = (lambda: engine.step(finished_only=True)) if args.finished_only else engine.step
    for _ in range(args.steps):
        step()
    if args.profile:
        prof.disable()
    total = time.perf_counter() - start
    n = args.steps
    print(json.dumps({"batch": args.batch, "finished_only": args.finished_only, "step_ms": round(total / n * 1e3, 3),
                      "runner_ms": round(runner_s[0] / n * 1e3, 3),
                      "outside_runner_ms": round((total - runner_s[0]) / n * 1e3, 3)}))
    if args.profile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
