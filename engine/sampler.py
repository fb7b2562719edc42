"""Token sampling with vLLM's semantics, on a [B, V] float32 logits batch (one row per sampled sequence).

Order (as in vLLM V1): min_tokens mask → repetition/presence/frequency penalties → greedy argmax for temperature 0;
otherwise temperature → min_p → top_k → top_p → one exponential race per row (kernels/sampling.py, greedy and
sampled rows in one call). Logprobs come from the raw logits. A row's race noise comes from one 64-bit seed: a
request with a seed derives it from (seed, sample index, draw count), so its tokens do not depend on what else is in
the batch; the others draw it from the sampler's generator. Rows that need nothing but temperature
(`graph_samplable`) can be sampled inside the decode CUDA graph with the same kernel and seeds.
"""
from dataclasses import dataclass

import torch

from kvant.engine.outputs import Logprob
from kvant.engine.sequence import Sequence
from kvant.kernels.sampling import sample_tokens

_U64 = (1 << 64) - 1


@dataclass(slots=True)
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[dict[int, float] | None]  # sampled token + top-k, for rows that asked for logprobs
    sampled_logprobs: list[float | None]


def stop_token_ids(seq: Sequence, eos_token_ids: tuple[int, ...]) -> set[int]:
    ids = set(seq.params.stop_token_ids or ())
    if not seq.params.ignore_eos:
        ids.update(eos_token_ids)
    return ids


def apply_min_tokens(logits: torch.Tensor, seqs: list[Sequence], eos_token_ids: tuple[int, ...]) -> None:
    for i, seq in enumerate(seqs):
        if seq.num_output_tokens < seq.params.min_tokens:
            ids = [t for t in stop_token_ids(seq, eos_token_ids) if t < logits.shape[1]]
            if ids:
                logits[i, ids] = float("-inf")


def _bin_counts(token_lists: list[list[int]], vocab_size: int, device) -> torch.Tensor:
    counts = torch.zeros(len(token_lists), vocab_size + 1, dtype=torch.int32, device=device)
    width = max((len(t) for t in token_lists), default=0)
    if width:
        # pad with vocab_size: a spare column that is dropped
        ids = torch.tensor([t + [vocab_size] * (width - len(t)) for t in token_lists], dtype=torch.int64, device=device)
        counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.int32))
    return counts[:, :vocab_size]


def apply_penalties(logits: torch.Tensor, seqs: list[Sequence]) -> None:
    rows = [i for i, s in enumerate(seqs) if s.params.repetition_penalty != 1.0 or s.params.presence_penalty != 0.0
            or s.params.frequency_penalty != 0.0]
    if not rows:
        return
    vocab, dev = logits.shape[1], logits.device
    sub = [seqs[i] for i in rows]
    out_counts = _bin_counts([s.output_token_ids for s in sub], vocab, dev)  # [R, V]
    prompt_seen = _bin_counts([s.prompt_token_ids for s in sub], vocab, dev) > 0
    x = logits[rows]
    rep = torch.tensor([s.params.repetition_penalty for s in sub], dtype=x.dtype, device=dev)[:, None]
    seen = prompt_seen | (out_counts > 0)
    x = torch.where(seen, torch.where(x > 0, x / rep, x * rep), x)
    freq = torch.tensor([s.params.frequency_penalty for s in sub], dtype=x.dtype, device=dev)[:, None]
    pres = torch.tensor([s.params.presence_penalty for s in sub], dtype=x.dtype, device=dev)[:, None]
    x = x - freq * out_counts.to(x.dtype) - pres * (out_counts > 0).to(x.dtype)
    logits[rows] = x


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(dim=-1)
    keep = probs >= min_p[:, None] * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(~keep, float("-inf"))


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """top_k [B] int64 (vocab size = off), top_p [B] float (> 1 = off)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(logits.shape[1], device=logits.device)[None, :]
    sorted_logits = sorted_logits.masked_fill(rank >= top_k[:, None], float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    # vLLM's rule: keep the smallest head of the ranking whose mass reaches top_p (the first token always stays)
    mass_before = probs.cumsum(dim=-1) - probs
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p[:, None], float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)


def top_logprobs(logprobs: torch.Tensor, token_ids: torch.Tensor, ks: list[int]) -> list[dict[int, Logprob]]:
    """Per row: {chosen token: logprob} plus the k most likely tokens, each with its vocabulary rank (vLLM's: 1 + the
    number of tokens more likely). logprobs [N, V], token_ids [N]."""
    k_max = max(ks, default=0)
    chosen_t = logprobs.gather(1, token_ids[:, None])
    chosen_rank = ((logprobs > chosen_t).sum(dim=-1) + 1).tolist()
    chosen = chosen_t[:, 0].tolist()
    top_val, top_idx = (logprobs.topk(k_max, dim=-1) if k_max else (None, None))
    ids = token_ids.tolist()
    out = []
    for i, k in enumerate(ks):
        entry = {ids[i]: Logprob(chosen[i], chosen_rank[i])}
        if k:
            for r, (t, v) in enumerate(zip(top_idx[i, :k].tolist(), top_val[i, :k].tolist())):
                entry.setdefault(t, Logprob(v, r + 1))
        out.append(entry)
    return out


def graph_samplable(seq: Sequence) -> bool:
    """True when this step's token needs only temperature (or greedy): no penalties, no min_tokens mask, no min_p,
    top_k or top_p, no logprobs. Such rows are sampled inside the decode graph."""
    p = seq.params
    return (p.logprobs is None and seq.num_output_tokens >= p.min_tokens and p.repetition_penalty == 1.0
            and p.presence_penalty == 0.0 and p.frequency_penalty == 0.0
            and (p.greedy or (p.min_p == 0 and not p.top_k_enabled and p.top_p >= 1)))


def _seeded(seed: int, index: int, draw: int) -> int:
    # (request seed, sample index, draw count) -> a signed 64-bit noise seed; the kernel hashes it further
    x = ((seed & _U64) * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + draw * 0x94D049BB133111EB) & _U64
    return x - (1 << 64) if x >> 63 else x


class Sampler:
    def __init__(self, device: torch.device | str, seed: int = 0):
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)  # noise seeds of requests without a seed (on the host)
        self.seq_draws: dict[int, int] = {}  # seq_id -> draws made so far by a seeded sequence

    def release(self, seq_id: int) -> None:
        self.seq_draws.pop(seq_id, None)

    def row_seeds(self, seqs: list[Sequence]) -> list[int]:
        """This step's noise seed per row (0 for greedy rows); advances each seeded sequence's draw count."""
        free = None
        out = []
        for i, seq in enumerate(seqs):
            p = seq.params
            if p.greedy:
                out.append(0)
            elif p.seed is None:
                if free is None:
                    free = torch.randint(-2**63, 2**63 - 1, (len(seqs),), generator=self.generator).tolist()
                out.append(free[i])
            else:
                draw = self.seq_draws.get(seq.seq_id, 0)
                self.seq_draws[seq.seq_id] = draw + 1
                out.append(_seeded(p.seed, seq.index, draw))
        return out

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor, seqs: list[Sequence], eos_token_ids: tuple[int, ...] = ()
                 ) -> SamplerOutput:
        """logits [B, V] float32, raw from the LM head; one row per sequence in `seqs`."""
        if logits.device.type == "cpu" and all(s.params.greedy and graph_samplable(s) for s in seqs):
            # greedy and nothing else to apply: sample_tokens_ref's greedy rows are this argmax; no copy of the logits
            return SamplerOutput(logits.argmax(dim=-1).tolist(), [None] * len(seqs), [None] * len(seqs))
        raw = logits
        logits = logits.clone()
        apply_min_tokens(logits, seqs, eos_token_ids)
        apply_penalties(logits, seqs)
        temps = [0.0 if s.params.greedy else float(s.params.temperature) for s in seqs]
        filtered = [i for i, s in enumerate(seqs) if not s.params.greedy and (
            s.params.min_p > 0 or s.params.top_k_enabled or s.params.top_p < 1)]
        if filtered:
            logits[filtered] = self._filter([seqs[i] for i in filtered], logits[filtered])
            for i in filtered:
                temps[i] = 1.0  # _filter applied the temperature
        dev = logits.device
        tokens = sample_tokens(logits, torch.tensor(temps, dtype=torch.float32, device=dev),
                               torch.tensor(self.row_seeds(seqs), dtype=torch.int64, device=dev))
        want = [i for i, s in enumerate(seqs) if s.params.logprobs is not None]
        logprob_dicts: list[dict[int, float] | None] = [None] * len(seqs)
        sampled: list[float | None] = [None] * len(seqs)
        if want:
            lp = raw[want].log_softmax(dim=-1)
            dicts = top_logprobs(lp, tokens[want], [seqs[i].params.logprobs for i in want])
            for i, d, t in zip(want, dicts, tokens[want].tolist()):
                logprob_dicts[i], sampled[i] = d, d[t]
        return SamplerOutput(tokens.tolist(), logprob_dicts, sampled)

    @staticmethod
    def _filter(seqs: list[Sequence], logits: torch.Tensor) -> torch.Tensor:
        """temperature → min_p → top_k → top_p; masked entries become -inf."""
        dev, vocab = logits.device, logits.shape[1]
        temps = torch.tensor([s.params.temperature for s in seqs], dtype=logits.dtype, device=dev)
        logits = logits / temps[:, None]
        if any(s.params.min_p > 0 for s in seqs):
            logits = apply_min_p(logits, torch.tensor([s.params.min_p for s in seqs], dtype=logits.dtype, device=dev))
        if any(s.params.top_k_enabled or s.params.top_p < 1 for s in seqs):
            top_k = torch.tensor([s.params.top_k if s.params.top_k_enabled else vocab for s in seqs], device=dev)
            top_p = torch.tensor([s.params.top_p if s.params.top_p < 1 else 2.0 for s in seqs], dtype=logits.dtype,
                                 device=dev)
            logits = apply_top_k_top_p(logits, top_k, top_p)
        return logits
