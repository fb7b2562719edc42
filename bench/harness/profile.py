"""`kvant bench profile`: where one decode step's time goes at a batch size.

Kernels per step (and per layer), GPU time (the kernels' summed durations), the engine step's wall time (steps run
back to back, as a workload runs them), the CUDA-graph replay alone, host time = step − replay (what the GPU waits
for the host), and the top kernels, from torch.profiler. On CPU there is no graph: "kernels"
are the aten ops the step runs and the replay time is 0, so the command runs (and is tested) on a tiny config in CI.
"""
import time

from kvant.engine.sampling_params import SamplingParams

# aten ops that only make views, allocate or no-op: not kernels
METADATA_OPS = frozenset(f"aten::{n}" for n in (
    "view", "as_strided", "as_strided_", "empty", "empty_strided", "empty_like", "to", "detach", "detach_",
    "lift_fresh", "resolve_conj", "resolve_neg", "alias", "result_type", "t", "transpose", "reshape", "_reshape_alias",
    "unsqueeze", "squeeze", "slice", "select", "expand", "split", "split_with_sizes", "permute", "resize_",
    "scalar_tensor", "narrow", "unbind", "chunk", "item", "_local_scalar_dense", "is_nonzero"))


def _decode_ready(engine, batch: int, input_len: int, steps: int) -> None:
    # `batch` greedy requests prefilled, so that every later step is a pure decode step of `batch` rows
    for i in range(batch):
        ids = [(7 * i + j) % 1000 + 1 for j in range(input_len)]
        engine.add_request(f"profile-{i}", ids, SamplingParams(temperature=0, max_tokens=steps, ignore_eos=True))
    while any(s.num_computed_tokens < s.num_prompt_tokens for s in engine.scheduler.running) or \
            engine.scheduler.waiting:
        engine.step()


def _step_seconds(engine, n: int, sync) -> float:
    """Seconds per step over n back-to-back steps (with async scheduling a step overlaps the one before it, so
    steps are timed as a run, with one sync at each end)."""
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        engine.step()
    sync()
    return (time.perf_counter() - t0) / n


def _replay_seconds(runner, batch: int, n: int) -> float:
    import torch

    if not runner.graphs or batch > max(runner.graphs):
        return 0.0
    graph = runner.graphs[next(s for s in sorted(runner.graphs) if s >= batch)]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()  # warm
    start.record()
    for _ in range(n):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / n


def _kernels(engine, cuda: bool) -> tuple[list[tuple[str, int, float]], int, float]:
    """[(name, calls, total µs)] of one decode step, most time first; the step's kernel count and GPU µs."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        engine.step()
        if cuda:
            import torch

            torch.cuda.synchronize()
    rows: dict[str, list] = {}
    for ev in prof.events():
        if cuda:
            if ev.device_type.name != "CUDA":
                continue
            dur = ev.device_time
        else:
            # outermost aten ops that touch data (aten::linear once, not also its matmul and mm)
            parent = ev.cpu_parent
            if not ev.name.startswith("aten::") or ev.name in METADATA_OPS or \
                    (parent is not None and parent.name.startswith("aten::")):
                continue
            dur = ev.cpu_time_total
        r = rows.setdefault(ev.name, [0, 0.0])
        r[0] += 1
        r[1] += dur
    table = sorted(((n, c, t) for n, (c, t) in rows.items()), key=lambda r: -r[2])
    return table, sum(r[1] for r in table), sum(r[2] for r in table)


def profile_decode(engine, batch: int, input_len: int = 128, steps: int = 20, top: int = 10) -> dict:
    import torch

    cuda = engine.runner.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    _decode_ready(engine, batch, input_len, steps=3 * steps + 8)
    step_s = min(_step_seconds(engine, steps, sync) for _ in range(2))
    table, num_kernels, gpu_us = _kernels(engine, cuda)
    replay_s = _replay_seconds(engine.runner, batch, steps) if cuda else 0.0
    while engine.has_unfinished_requests():  # finish the requests: no KV blocks left behind
        engine.step()
    layers = engine.model_config.num_hidden_layers
    from kvant.kernels.dispatch import pdl_launch

    pdl = cuda and pdl_launch(engine.runner.device)["PDL"]
    return {"batch": batch, "device": torch.cuda.get_device_name() if cuda else "cpu", "graph": replay_s > 0, "pdl": pdl,
            "kernels_per_step": num_kernels, "kernels_per_layer": num_kernels / layers,
            "gpu_time_ms": gpu_us / 1e3, "step_ms": step_s * 1e3, "replay_ms": replay_s * 1e3,
            "host_ms": (step_s - replay_s) * 1e3 if replay_s else None,
            "top_kernels": [{"name": n, "calls": c, "total_us": t} for n, c, t in table[:top]]}


def print_profile(res: dict) -> None:
    host = f"host {res['host_ms']:.2f} ms" if res["host_ms"] is not None else "no graph"
    what = "GPU" if res["device"] != "cpu" else "op time"
    print(f"batch {res['batch']} on {res['device']}: {res['kernels_per_step']} kernels/step "
          f"({res['kernels_per_layer']:.1f}/layer), {what} {res['gpu_time_ms']:.2f} ms, step {res['step_ms']:.2f} ms, "
          f"replay {res['replay_ms']:.2f} ms, {host}")
    if res.get("pdl"):
        print("  programmatic dependent launch is on: a kernel's time includes its wait for the one before, so the GPU "
              "time overlaps and the kernels below are no breakdown (KVANT_PDL=0 gives one)")
    for k in res["top_kernels"]:
        print(f"  {k['total_us']:9.1f} us  {k['calls']:4d}x  {k['name'][:100]}")
