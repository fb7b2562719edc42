"""Seeded token-id workloads for `kvant bench`: W1 is nano-vllm's bench.py exactly; W2-W5 are fixed-length
workloads (see bench/RESULTS.md)."""
import random
from dataclasses import dataclass

WORKLOADS = ("W1", "W2", "W3", "W4", "W5")


@dataclass(slots=True, frozen=True)
class Request:
    prompt_token_ids: list[int]
    max_tokens: int


def workload(name: str, limit: int | None = None) -> list[Request]:
    random.seed(0)  # nano-vllm: seed 0, 256 sequences, lengths U[100, 1024], ids U[0, 10000]
    if name == "W1":
        prompts = [[random.randint(0, 10000) for _ in range(random.randint(100, 1024))] for _ in range(256)]
        outs = [random.randint(100, 1024) for _ in range(256)]  # sums to 133,966
        reqs = [Request(p, o) for p, o in zip(prompts, outs)]
    else:
        shapes = {"W2": (1000, 1000, 128), "W3": (2048, 128, 512), "W4": (128, 128, 1024), "W5": (128, 512, 1)}
        if name not in shapes:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, got {name!r}")
        isl, osl, n = shapes[name]
        reqs = [Request([random.randint(0, 10000) for _ in range(isl)], osl) for _ in range(n)]
    return reqs[:limit] if limit else reqs
