"""Calibration statistics of a Linear's input, each fed with `update(x [..., K])`."""
import torch


class AbsMax:
    # per-tensor max |x| (FP8 static input_scale, FP8 KV-cache scales)
    def __init__(self):
        self.value = 0.0

    def update(self, x: torch.Tensor) -> None:
        self.value = max(self.value, float(x.detach().abs().max()))


class ChannelAbsMax:
    # per input channel max |x| -> [K] (SmoothQuant)
    def __init__(self):
        self.value: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        m = x.detach().reshape(-1, x.shape[-1]).abs().amax(dim=0).float()
        self.value = m if self.value is None else torch.maximum(self.value, m)


class Hessian:
    # H = 2 X^T X / n over all n tokens, fp32 [K, K] (GPTQ)
    def __init__(self, k: int, device: torch.device):
        self.sum = torch.zeros(k, k, dtype=torch.float32, device=device)
        self.num_tokens = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.sum.addmm_(x.t(), x)
        self.num_tokens += x.shape[0]

    def value(self) -> torch.Tensor:
        return self.sum * (2.0 / max(self.num_tokens, 1))


class TokenSample:
    # up to max_tokens input rows [T, K], a seeded uniform sample per update (AWQ's searches)
    def __init__(self, max_tokens: int, per_update: int, seed: int = 0):
        self.max_tokens = max_tokens
        self.per_update = per_update
        self.rows: list[torch.Tensor] = []
        self.gen = torch.Generator().manual_seed(seed)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1])
        take = min(self.per_update, x.shape[0])
        idx = torch.randperm(x.shape[0], generator=self.gen)[:take].to(x.device)
        self.rows.append(x[idx].float())

    def value(self) -> torch.Tensor:
        rows = torch.cat(self.rows)
        if rows.shape[0] > self.max_tokens:
            rows = rows[torch.randperm(rows.shape[0], generator=self.gen)[: self.max_tokens].to(rows.device)]
        return rows
