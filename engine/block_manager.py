import hashlib
from array import array
from collections import OrderedDict

from kvant.engine.sequence import Sequence


def block_hash(parent: bytes | None, token_ids: list[int]) -> bytes:
    """Content hash of a full block chained to its prefix (a block is only equal in the same context)."""
    h = hashlib.blake2b(parent or b"", digest_size=16)
    h.update(array("q", token_ids).tobytes())
    return h.digest()


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_count = 0
        self.hash: bytes | None = None  # set once the block is full and computed (prefix cache entry)
        self.token_ids: list[int] = []


class BlockManager:
    """Fixed pool of KV blocks with ref counts and a content-addressed prefix cache.

    Invariant: every block is either referenced (ref_count > 0, in no free list) or in `free_block_ids`.
    Free blocks keep their hash until reused, so a freed prefix can still be hit; reuse takes the least recently
    freed block first (LRU), and blocks that hold no cached content go to the front so they are reused first.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_block_ids: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.hash_to_block_id: dict[bytes, int] = {}
        self.num_prefix_queried_tokens = 0
        self.num_prefix_hit_tokens = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self.free_block_ids)

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    @property
    def prefix_hit_rate(self) -> float:
        return self.num_prefix_hit_tokens / self.num_prefix_queried_tokens if self.num_prefix_queried_tokens else 0.0

    # prefix cache
    def match_prefix(self, seq: Sequence) -> list[int]:
        """Ids of cached blocks equal to seq's leading full blocks; at least one token is always left to compute."""
        if not (self.enable_prefix_caching and seq.uses_prefix_cache):
            return []
        hits: list[int] = []
        parent = None
        for i in range(seq.cacheable_tokens // self.block_size):
            tokens = seq.block_tokens(i)
            h = block_hash(parent, tokens)
            block_id = self.hash_to_block_id.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
            parent = h
        return hits

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register seq's blocks that are full and computed (call after each step)."""
        if not self.enable_prefix_caching:
            return
        for i in range(len(seq.block_hashes), seq.num_computed_tokens // self.block_size):
            tokens = seq.block_tokens(i)
            h = block_hash(seq.block_hashes[-1] if seq.block_hashes else None, tokens)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if block.hash is None:
                block.hash, block.token_ids = h, tokens
                self.hash_to_block_id.setdefault(h, block.block_id)

    # allocation
    def can_allocate(self, hit_block_ids: list[int], num_tokens: int) -> bool:
        revived = sum(1 for b in hit_block_ids if self.blocks[b].ref_count == 0)
        needed = -(-num_tokens // self.block_size) - len(hit_block_ids)
        return needed + revived <= self.num_free_blocks

    def allocate(self, seq: Sequence, hit_block_ids: list[int], num_tokens: int) -> None:
        """Give a waiting seq its cached prefix blocks plus fresh blocks for `num_tokens` tokens in all."""
        if seq.block_table:
            raise RuntimeError(f"sequence {seq.seq_id} already holds blocks")
        if self.enable_prefix_caching and seq.uses_prefix_cache:
            self.num_prefix_queried_tokens += seq.num_tokens
            self.num_prefix_hit_tokens += len(hit_block_ids) * self.block_size
        for block_id in hit_block_ids:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free_block_ids[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
            seq.block_hashes.append(block.hash)
        seq.num_computed_tokens = seq.num_cached_tokens = len(hit_block_ids) * self.block_size
        self._grow(seq, num_tokens)

    def can_append(self, seq: Sequence, num_new_tokens: int) -> bool:
        needed = seq.blocks_for(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
        return needed <= self.num_free_blocks

    def append_slots(self, seq: Sequence, num_new_tokens: int) -> None:
        self._grow(seq, seq.num_computed_tokens + num_new_tokens)

    def deallocate(self, seq: Sequence) -> None:
        # tail first, so a prefix's head blocks are the last of it to be evicted
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count < 0:
                raise RuntimeError(f"block {block_id} freed more often than allocated")
            if block.ref_count == 0:
                self.free_block_ids[block_id] = None
                if block.hash is None:
                    self.free_block_ids.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.block_hashes = []

    def _grow(self, seq: Sequence, num_tokens: int) -> None:
        needed = seq.blocks_for(num_tokens) - len(seq.block_table)
        if needed > self.num_free_blocks:
            raise RuntimeError(f"out of KV blocks: need {needed}, {self.num_free_blocks} free")
        for _ in range(needed):
            seq.block_table.append(self._take_free_block())

    def _take_free_block(self) -> int:
        block_id, _ = self.free_block_ids.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None:  # evict its cached content
            if self.hash_to_block_id.get(block.hash) == block_id:
                del self.hash_to_block_id[block.hash]
            block.hash, block.token_ids = None, []
        block.ref_count = 1
        return block_id
