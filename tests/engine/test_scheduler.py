import random

import pytest

from kvant.engine.block_manager import BlockManager
from kvant.engine.sampling_params import SamplingParams
from kvant.engine.scheduler import Scheduler
from kvant.engine.sequence import Sequence, SequenceStatus

from .test_block_manager import check_pool

BS = 4


def make_seq(seq_id, num_prompt, max_tokens=4, first_token=0):
    tokens = [first_token + (seq_id * 1000 + i) % 997 for i in range(num_prompt)]
    return Sequence(seq_id, f"r{seq_id}", 0, tokens, SamplingParams(max_tokens=max_tokens), BS)


def step(sched: Scheduler, finished: list):
    """One engine step with a stand-in model: every seq that reaches its end gets token 7."""
    batch = sched.schedule()
    assert batch.num_tokens <= sched.max_num_batched_tokens
    assert len({s.seq_id for s in batch.seqs}) == len(batch.seqs)
    assert len(sched.running) <= sched.max_num_seqs
    for seq, n in zip(batch.seqs, batch.num_new_tokens):
        assert seq.status is SequenceStatus.RUNNING and 1 <= n <= seq.num_uncomputed_tokens
        assert len(seq.block_table) * BS >= seq.num_computed_tokens + n
    sched.postprocess(batch)
    for seq in batch.seqs:
        if seq.num_computed_tokens == seq.num_tokens:
            seq.append_token(7)
            if seq.num_output_tokens == seq.params.max_tokens:
                sched.finish(seq)
                finished.append(seq)
    check_pool(sched.block_manager, list(sched.running))
    return batch


def test_decodes_first_then_chunked_prefill_in_one_step():
    sched = Scheduler(BlockManager(64, BS), max_num_seqs=8, max_num_batched_tokens=10)
    a = make_seq(0, 6, max_tokens=10)
    sched.add(a)
    done = []
    b1 = step(sched, done)
    assert b1.seqs == [a] and b1.num_new_tokens == [6]
    b = make_seq(1, 25)
    sched.add(b)
    b2 = step(sched, done)
    assert b2.seqs == [a, b] and b2.num_new_tokens == [1, 9]  # a decode and a 9-token chunk of b
    assert not b2.is_decode
    b3 = step(sched, done)
    assert b3.num_new_tokens == [1, 9]
    b4 = step(sched, done)
    assert b4.num_new_tokens == [1, 7] and b.num_output_tokens == 1  # b's last chunk samples its first token
    b5 = step(sched, done)
    assert b5.is_decode and b5.num_new_tokens == [1, 1]


def test_max_num_seqs_limits_admission():
    sched = Scheduler(BlockManager(64, BS), max_num_seqs=2, max_num_batched_tokens=100)
    seqs = [make_seq(i, 3) for i in range(5)]
    for s in seqs:
        sched.add(s)
    b = step(sched, [])
    assert b.seqs == seqs[:2] and list(sched.waiting) == seqs[2:]


def test_preemption_frees_newest_and_requeues_at_front():
    # 6 blocks of 4: two 8-token prompts fill 4 blocks; growing both past 12 tokens needs 8
    sched = Scheduler(BlockManager(6, BS), max_num_seqs=8, max_num_batched_tokens=64)
    a, b, c = make_seq(0, 8, max_tokens=10), make_seq(1, 8, max_tokens=10), make_seq(2, 3, max_tokens=2)
    for s in (a, b, c):
        sched.add(s)
    done = []
    step(sched, done)
    assert list(sched.running) == [a, b, c]
    while not sched.num_preemptions:
        step(sched, done)
    # step 2: a takes the last free block for its 9th token; b needs one too, so the newest (c) is preempted
    assert sched.waiting[0] is c and c.status is SequenceStatus.WAITING
    assert c.block_table == [] and c.num_computed_tokens == 0 and c.num_preemptions == 1
    assert list(sched.running) == [a, b] and done == []
    while not sched.is_finished():
        step(sched, done)
    assert sorted(s.seq_id for s in done) == [0, 1, 2]
    assert [s.num_output_tokens for s in (a, b, c)] == [10, 10, 2]
    check_pool(sched.block_manager, [])
    assert sched.block_manager.num_free_blocks == 6


def started(num_blocks: int, *seqs: Sequence) -> Scheduler:
    # a scheduler with room for every sequence but not for their KV blocks, the sequences queued in order
    sched = Scheduler(BlockManager(num_blocks, BS), max_num_seqs=8, max_num_batched_tokens=64)
    for seq in seqs:
        sched.add(seq)
    return sched


def test_preempted_sequence_recomputes_from_its_cached_blocks():
    a, b = make_seq(0, 8, max_tokens=10), make_seq(1, 8, max_tokens=10)
    sched = started(6, a, b)
    done = []
    head = None
    while not sched.num_preemptions:
        head = b.block_table[0] if b.block_table else head
        step(sched, done)
    assert b.status is SequenceStatus.WAITING and b.num_output_tokens == 5  # 13 tokens: 3 full blocks were cached
    hits_before = sched.block_manager.num_prefix_hit_tokens
    while b.status is SequenceStatus.WAITING:
        step(sched, done)
    # a's last growth takes one of b's freed blocks; freeing tail first means it takes b's second block, not its
    # head, so b comes back on its own first block and recomputes the rest
    assert b.block_table[0] == head and b.num_cached_tokens == BS
    assert sched.block_manager.num_prefix_hit_tokens - hits_before == BS
    while not sched.is_finished():
        step(sched, done)
    assert sorted(s.seq_id for s in done) == [0, 1] and all(s.num_output_tokens == 10 for s in done)
    check_pool(sched.block_manager, [])


def test_self_preemption_when_alone_it_cannot_grow():
    a, b = make_seq(0, 4, max_tokens=7), make_seq(1, 4, max_tokens=7)
    sched = started(3, a, b)
    done = []
    while not sched.is_finished():
        step(sched, done)
    assert sorted(s.seq_id for s in done) == [0, 1] and sched.num_preemptions >= 1
    assert all(s.num_output_tokens == 7 for s in done)
    check_pool(sched.block_manager, [])


def test_abort_waiting_and_running_frees_blocks():
    sched = Scheduler(BlockManager(16, BS), max_num_seqs=1, max_num_batched_tokens=64)
    a, b = make_seq(0, 9), make_seq(1, 5)
    sched.add(a)
    sched.add(b)
    step(sched, [])
    assert a.status is SequenceStatus.RUNNING and b.status is SequenceStatus.WAITING
    sched.finish(b)
    sched.finish(a)
    assert sched.is_finished() and a.is_finished and b.is_finished
    check_pool(sched.block_manager, [])
    assert sched.block_manager.num_free_blocks == 16


@pytest.mark.parametrize("seed", range(4))
def test_random_workload_no_request_dropped_or_duplicated(seed):
    rng = random.Random(seed)
    num_blocks = rng.choice([12, 20, 40])
    sched = Scheduler(BlockManager(num_blocks, BS), max_num_seqs=rng.choice([2, 4, 16]),
                      max_num_batched_tokens=rng.choice([5, 16, 64]))
    seqs = []
    shared = [rng.randrange(50) for _ in range(9)]
    for i in range(30):
        # some requests share a prefix, so cached blocks are shared and evicted along the way
        prompt = [rng.randrange(50) for _ in range(rng.randint(1, 20))]
        if i % 3 == 0:
            prompt = shared + prompt
        seqs.append(Sequence(i, f"r{i}", 0, prompt, SamplingParams(max_tokens=rng.randint(1, 12)), BS))
    pending = list(seqs)
    done = []
    steps = 0
    while pending or not sched.is_finished():
        for _ in range(rng.randint(0, 3)):
            if pending:
                sched.add(pending.pop(0))
        step(sched, done)
        steps += 1
        assert steps < 5000
    assert sorted(s.seq_id for s in done) == list(range(30))
    assert all(s.num_output_tokens == s.params.max_tokens for s in done)
    check_pool(sched.block_manager, [])
    assert sched.block_manager.num_free_blocks == num_blocks
