"""Independent loop implementations the kernel references are checked against (tiny shapes only)."""
import math

import torch


def pack_rows(q: torch.Tensor) -> torch.Tensor:
    # int [R, K] in [-8, 7] -> int32 [R, K / 8], element j of word w in bits 4j..4j+3 (value + 8)
    r, k = q.shape
    out = torch.zeros(r, k // 8, dtype=torch.int64)
    for i in range(r):
        for j in range(k):
            out[i, j // 8] |= (int(q[i, j]) + 8) << (4 * (j % 8))
    return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)


def attend(q_row, keys, values, scale):
    # q_row [D]; keys/values: lists of [D] tensors (fp32) -> [D]
    scores = [scale * float(torch.dot(q_row, k)) for k in keys]
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    out = torch.zeros_like(q_row)
    for w, v in zip(weights, values):
        out += (w / total) * v
    return out


def pack_rows_fast(q: torch.Tensor) -> torch.Tensor:
    # the same layout as pack_rows, vectorised for the larger interpreter shapes
    r, k = q.shape
    v = (q.long() + 8).reshape(r, k // 8, 8) << (4 * torch.arange(8))
    words = v.sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
