import subprocess
import sys

import pytest

from kvant.engine.block_manager import BlockManager, block_hash
from kvant.engine.sampling_params import SamplingParams
from kvant.engine.sequence import Sequence

BS = 4


def make_seq(seq_id, tokens, **params):
    return Sequence(seq_id, f"r{seq_id}", 0, tokens, SamplingParams(**params), BS)


def check_pool(bm: BlockManager, live: list[Sequence]) -> None:
    refs = [0] * bm.num_blocks
    for seq in live:
        for b in seq.block_table:
            refs[b] += 1
    assert [blk.ref_count for blk in bm.blocks] == refs
    assert bm.num_free_blocks + sum(r > 0 for r in refs) == bm.num_blocks
    assert set(bm.free_block_ids) == {i for i, r in enumerate(refs) if r == 0}


def compute(bm, seq, n):
    bm.append_slots(seq, n) if seq.block_table else bm.allocate(seq, [], n)
    seq.num_computed_tokens += n
    bm.cache_full_blocks(seq)


def test_engine_core_imports_no_torch():
    code = ("import sys; import kvant.engine.scheduler, kvant.engine.block_manager, kvant.engine.sequence, "
            "kvant.engine.sampling_params, kvant.engine.outputs; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_allocate_and_free_restore_pool():
    bm = BlockManager(8, BS)
    a, b = make_seq(0, list(range(10))), make_seq(1, list(range(100, 103)))
    bm.allocate(a, [], 10)
    bm.allocate(b, [], 3)
    assert len(a.block_table) == 3 and len(b.block_table) == 1
    check_pool(bm, [a, b])
    assert bm.num_free_blocks == 4
    bm.deallocate(a)
    bm.deallocate(b)
    check_pool(bm, [])
    assert bm.num_free_blocks == 8 and a.block_table == [] and b.block_table == []


def test_can_append_counts_block_boundaries():
    bm = BlockManager(3, BS)
    s = make_seq(0, list(range(7)))
    compute(bm, s, 7)  # 2 blocks, 1 free slot in the second
    assert bm.can_append(s, 1) and bm.can_append(s, 5)  # 8 tokens: 2 blocks; 12 tokens: 3 blocks
    assert not bm.can_append(s, 6)  # 13 tokens: 4 blocks > 3
    bm.append_slots(s, 5)
    assert len(s.block_table) == 3 and bm.num_free_blocks == 0
    with pytest.raises(RuntimeError):
        bm.append_slots(s, 6)


def test_shared_prefix_hit_and_refcounts():
    bm = BlockManager(16, BS)
    prefix = list(range(50, 59))  # 2 full blocks + 1 token
    a = make_seq(0, prefix + [1, 2, 3])
    compute(bm, a, a.num_tokens)  # 12 tokens = 3 full blocks, all computed and hashed
    b = make_seq(1, prefix[:8] + [7, 7, 7, 7, 9])
    hits = bm.match_prefix(b)
    assert hits == a.block_table[:2]
    bm.allocate(b, hits, b.num_tokens)
    assert b.num_cached_tokens == 8 and b.num_computed_tokens == 8
    assert [bm.blocks[i].ref_count for i in a.block_table] == [2, 2, 1]
    check_pool(bm, [a, b])
    assert bm.prefix_hit_rate == pytest.approx(8 / (a.num_tokens + b.num_tokens))
    bm.deallocate(a)
    bm.deallocate(b)
    check_pool(bm, [])


def test_hit_leaves_one_token_to_compute():
    bm = BlockManager(8, BS)
    a = make_seq(0, list(range(8)))
    compute(bm, a, 8)
    b = make_seq(1, list(range(8)))  # identical prompt of exactly 2 blocks
    assert bm.match_prefix(b) == a.block_table[:1]


def test_chained_hash_depends_on_prefix():
    assert block_hash(None, [1, 2]) != block_hash(block_hash(None, [0, 0]), [1, 2])
    bm = BlockManager(8, BS)
    a = make_seq(0, [1, 1, 1, 1, 2, 2, 2, 2, 0])
    compute(bm, a, 9)
    b = make_seq(1, [3, 3, 3, 3, 2, 2, 2, 2, 0])  # same second block, different context
    assert bm.match_prefix(b) == []


def test_freed_blocks_stay_cached_until_reused_lru():
    bm = BlockManager(4, BS)
    a = make_seq(0, [1] * 4 + [2] * 4 + [9])
    compute(bm, a, 9)
    head, tail, partial = a.block_table
    bm.deallocate(a)  # blocks back in the pool, the two full ones still hashed
    check_pool(bm, [])
    b = make_seq(1, [1] * 4 + [2] * 4 + [5])
    assert bm.match_prefix(b) == [head, tail]
    # reuse order: the unhashed partial block, the never-used block, then cached blocks tail-first (freed first)
    c = make_seq(2, [7] * 12)
    compute(bm, c, 12)
    assert c.block_table == [partial, 3, tail]
    check_pool(bm, [c])
    assert bm.match_prefix(b) == [head]
    d = make_seq(3, [8] * 4)
    compute(bm, d, 4)  # evicts the last cached block of a
    assert d.block_table == [head] and bm.match_prefix(b) == []
    assert len(bm.hash_to_block_id) == 4  # c's three blocks and d's one
    for s in (c, d):
        bm.deallocate(s)
    check_pool(bm, [])


def test_revived_cached_block_leaves_free_list():
    bm = BlockManager(3, BS)
    a = make_seq(0, [4] * 4 + [5])
    compute(bm, a, 5)
    bm.deallocate(a)
    b = make_seq(1, [4] * 4 + [6, 6, 6, 6, 6])
    hits = bm.match_prefix(b)
    assert len(hits) == 1 and bm.blocks[hits[0]].ref_count == 0
    assert bm.can_allocate(hits, 9)  # 3 blocks: 1 revived + 2 fresh, 3 free
    assert not bm.can_allocate(hits, 13)
    bm.allocate(b, hits, 9)
    assert bm.num_free_blocks == 0
    check_pool(bm, [b])
    bm.deallocate(b)
    check_pool(bm, [])


def test_prompt_logprobs_requests_skip_the_cache():
    bm = BlockManager(8, BS)
    a = make_seq(0, list(range(9)))
    compute(bm, a, 9)
    b = make_seq(1, list(range(9)), prompt_logprobs=1)
    assert bm.match_prefix(b) == []


def test_prompt_logprobs_from_lets_the_cache_serve_the_rows_before_it():
    bm = BlockManager(8, BS)
    a = make_seq(0, list(range(13)))
    compute(bm, a, 13)
    # logprobs wanted from position 9: row 8 must be computed, so at most 8 tokens (two blocks) come from the cache
    assert len(bm.match_prefix(make_seq(1, list(range(13)), prompt_logprobs=1, prompt_logprobs_from=9))) == 2
    assert len(bm.match_prefix(make_seq(2, list(range(13)), prompt_logprobs=1, prompt_logprobs_from=8))) == 1
    assert bm.match_prefix(make_seq(3, list(range(13)), prompt_logprobs=1, prompt_logprobs_from=4)) == []


def test_caching_disabled_never_hits():
    bm = BlockManager(8, BS, enable_prefix_caching=False)
    a = make_seq(0, list(range(9)))
    compute(bm, a, 9)
    assert bm.hash_to_block_id == {} and bm.match_prefix(make_seq(1, list(range(9)))) == []
