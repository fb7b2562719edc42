"""Persistent host buffers for CUDA-graph decode steps: filled in place with numpy, one copy per tensor into the
graph's static inputs, padded rows included (no per-step tensors from Python lists, no fill kernels)."""
import torch

from kvant.engine.sequence import PENDING_TOKEN, Sequence


class DecodeInputs:
    def __init__(self, max_bs: int, max_blocks_per_seq: int, block_size: int, pin: bool):
        self.block_size = block_size
        mk = lambda n, dtype: torch.zeros(n, dtype=dtype, pin_memory=pin)  # noqa: E731
        self.input_ids, self.positions, self.slot_mapping = mk(max_bs, torch.int64), mk(max_bs, torch.int64), \
            mk(max_bs, torch.int64)
        self.context_lens = mk(max_bs, torch.int32)
        self.block_tables = mk(max_bs * max_blocks_per_seq, torch.int32)  # [bs, width] packed at the front
        # sampling inside the graph: temperature (0 = greedy) and the race's noise seed per row
        self.temperature, self.seeds = mk(max_bs, torch.float32), mk(max_bs, torch.int64)
        # async scheduling: the row of the previous step's sampled tokens that holds this row's input id (its
        # last token is still on the device), or -1 (the id is in input_ids)
        self.prev_rows = mk(max_bs, torch.int64)
        self._np = {n: getattr(self, n).numpy() for n in self.ROW_INPUTS + ("block_tables",)}

    ROW_INPUTS = ("input_ids", "positions", "slot_mapping", "context_lens", "temperature", "seeds", "prev_rows")

    def fill(self, seqs: list[Sequence], bs: int, temperature: list[float], seeds: list[int],
             prev_rows: list[int] | None = None) -> int:
        """Rows 0..len(seqs)-1 from the sequences (each decodes its last token, sampled with its temperature and
        seed; a PENDING_TOKEN last token is read on the device from the previous step's row `prev_rows[i]`), rows
        up to bs padding: slot -1 (stores nothing), context 1 on block 0, greedy. Returns the block-table width."""
        n, bsz, a = len(seqs), self.block_size, self._np
        width = max(len(s.block_table) for s in seqs)
        tables = a["block_tables"][:bs * width].reshape(bs, width)
        for i, seq in enumerate(seqs):
            p = seq.num_tokens - 1  # position of the token this step feeds
            token = seq.token_ids[p]
            a["input_ids"][i] = 0 if token == PENDING_TOKEN else token  # a pending id is read on the device
            a["positions"][i] = p
            a["slot_mapping"][i] = seq.block_table[p // bsz] * bsz + p % bsz
            a["context_lens"][i] = p + 1
            tables[i, :len(seq.block_table)] = seq.block_table
        a["temperature"][:n] = temperature
        a["seeds"][:n] = seeds
        a["prev_rows"][:n] = prev_rows if prev_rows is not None else -1
        a["prev_rows"][n:bs] = -1
        a["temperature"][n:bs] = 0.0
        a["input_ids"][n:bs] = 0
        a["positions"][n:bs] = 0
        a["slot_mapping"][n:bs] = -1
        a["context_lens"][n:bs] = 1
        tables[n:bs, 0] = 0
        return width

    def copy_to(self, g: dict[str, torch.Tensor], bs: int, width: int) -> None:
        # non-blocking copies from pinned memory: the caller does not refill these buffers before the copies ran
        # (ModelRunner alternates two sets and waits on the step before last, see launch_decode)
        for name in self.ROW_INPUTS:
            g[name][:bs].copy_(getattr(self, name)[:bs], non_blocking=True)
        g["block_tables"][:bs, :width].copy_(self.block_tables[:bs * width].view(bs, width), non_blocking=True)

