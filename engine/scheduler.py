from collections import deque
from dataclasses import dataclass

from kvant.engine.block_manager import BlockManager
from kvant.engine.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class ScheduledBatch:
    seqs: list[Sequence]
    num_new_tokens: list[int]  # tokens of each seq computed this step (a decode is 1, a prefill chunk more)

    @property
    def is_decode(self) -> bool:
        return all(n == 1 for n in self.num_new_tokens)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def __len__(self) -> int:
        return len(self.seqs)


class Scheduler:
    """Continuous batching under a per-step token budget.

    Each step serves running sequences first, in arrival order (a decode takes one token of the budget, an
    unfinished chunked prefill takes what is left), then admits waiting sequences while the budget, `max_num_seqs`
    and free blocks allow; the last one admitted may get only a chunk of its prompt. When a running sequence needs
    a block and none is free, the newest running sequence is preempted: its blocks are freed and it goes back to the
    front of the waiting queue, to be recomputed (its cached blocks can still be hit then).
    """

    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.num_preemptions = 0

    def is_finished(self) -> bool:
        return not self.waiting and not self.running

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def schedule(self) -> ScheduledBatch:
        bm = self.block_manager
        batch = ScheduledBatch([], [])
        budget = self.max_num_batched_tokens
        preempted = False
        # running: decodes and unfinished chunked prefills
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_uncomputed_tokens, budget)
            while not bm.can_append(seq, n):
                victim = self.running.pop()  # newest
                self.preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                bm.append_slots(seq, n)
                batch.seqs.append(seq)
                batch.num_new_tokens.append(n)
                budget -= n
                i += 1
                continue
            break
        # waiting: admit in order; none while memory is short
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and not preempted:
            seq = self.waiting[0]
            hits = bm.match_prefix(seq)
            num_cached = len(hits) * bm.block_size
            n = min(seq.num_tokens - num_cached, budget)
            if not bm.can_allocate(hits, num_cached + n):
                break
            bm.allocate(seq, hits, num_cached + n)
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        return batch

    def postprocess(self, batch: ScheduledBatch) -> None:
        """Account the step's computed tokens and publish newly full blocks to the prefix cache."""
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += n
            self.block_manager.cache_full_blocks(seq)

    def preempt(self, seq: Sequence) -> None:
        self.block_manager.deallocate(seq)
        seq.reset_for_recompute()
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish(self, seq: Sequence) -> None:
        """Remove a running or waiting seq for good and free its blocks (finish or abort)."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.block_manager.deallocate(seq)
        seq.status = SequenceStatus.FINISHED
