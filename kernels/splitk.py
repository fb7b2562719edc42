"""Split-K without a zero-fill or a cast launch: each split stores its fp32 partial tile in a persistent workspace,
and the last split of a tile to arrive (an atomic counter per tile) sums the partials in a fixed order, writes the
16-bit output and resets the counter for the next call. Results are deterministic (no float atomics)."""
import torch
import triton
import triton.language as tl

# per device: (workspace fp32, counters int32). Buffers only grow, and the old ones stay alive: a CUDA graph captured
# earlier keeps pointing at them.
_buffers: dict[torch.device, list[tuple[torch.Tensor, torch.Tensor]]] = {}


def splitk_buffers(device: torch.device, num_tiles: int, split: int, tile_elems: int):
    """(workspace >= num_tiles * split * tile_elems fp32, counters >= num_tiles int32, zeroed once)."""
    need_ws, need_cnt = max(1, num_tiles * split * tile_elems if split > 1 else 1), max(1, num_tiles)
    held = _buffers.setdefault(device, [])
    if held and held[-1][0].numel() >= need_ws and held[-1][1].numel() >= need_cnt:
        return held[-1]
    ws_size = max(need_ws, held[-1][0].numel() if held else 0, 1 << 20)
    cnt_size = max(need_cnt, held[-1][1].numel() if held else 0, 4096)
    held.append((torch.empty(ws_size, dtype=torch.float32, device=device),
                 torch.zeros(cnt_size, dtype=torch.int32, device=device)))
    return held[-1]


def split_count(num_k_tiles: int, programs_mn: int, num_sms: int, waves: int) -> tuple[int, int]:
    """(split, K tiles per split): enough splits for about `waves` programs per SM, every split non-empty."""
    split = max(1, min(num_k_tiles, waves * num_sms // max(1, programs_mn)))
    per_split = triton.cdiv(num_k_tiles, split)
    return triton.cdiv(num_k_tiles, per_split), per_split


@triton.jit
def store_or_reduce(acc, out_ptrs, mask, ws_ptr, cnt_ptr, tile_id, pid_k, SPLIT, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr):
    # acc fp32 [BLOCK_M, BLOCK_N] of split pid_k for output tile tile_id; out_ptrs/mask address that tile. SPLIT may
    # be a constexpr or a runtime int (then Triton's specialisation of a 1 argument still compiles the 1-split form)
    if SPLIT == 1:
        tl.store(out_ptrs, acc.to(out_ptrs.dtype.element_ty), mask=mask)
    else:
        tile = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        base = ws_ptr + tile_id.to(tl.int64) * (SPLIT * BLOCK_M * BLOCK_N)
        tl.store(base + pid_k * (BLOCK_M * BLOCK_N) + tile, acc)
        tl.debug_barrier()  # every thread's partial is issued before the release below
        arrived = tl.atomic_add(cnt_ptr + tile_id, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT - 1:  # last split of this tile: sum all partials in split order
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for s in range(SPLIT):
                total += tl.load(base + s * (BLOCK_M * BLOCK_N) + tile, cache_modifier=".cg")
            tl.store(out_ptrs, total.to(out_ptrs.dtype.element_ty), mask=mask)
            tl.atomic_xchg(cnt_ptr + tile_id, 0, sem="relaxed", scope="gpu")
