"""One token per logits row, greedy or sampled, in two small kernels that fit in a CUDA graph.

Row r with temperature[r] == 0 takes the argmax of its logits (the first index on ties, as torch.argmax). Any other
row takes argmax(logits / T - log(E)), E ~ Exp(1) per vocabulary entry: the exponential race (Gumbel-max), which
draws from softmax(logits / T). E comes from a counter-based hash of (seeds[r], vocabulary index), so a row's draw
depends on its seed only, never on the batch around it, and the torch reference below reproduces it bit for bit.
Logits are read once in their own dtype (bf16 from the LM head: no fp32 copy of the full [B, V] tensor).
"""
import torch
import triton
import triton.language as tl

from kvant.kernels.dispatch import on_cuda, pdl_enter, pdl_launch

CHUNK = 2048  # vocabulary entries per program of the first pass

_MASK32 = 0xFFFFFFFF
_M1, _M2 = 0x7FEB352D, 0x846CA68B  # "lowbias32" multipliers (an avalanching 32-bit integer hash)


# ---- torch reference -------------------------------------------------------------------------------------------

def _hash32_ref(x: torch.Tensor) -> torch.Tensor:
    # int64 holding 32-bit values; products wrap mod 2^64 and are masked back to 32 bits
    x = x ^ (x >> 16)
    x = (x * _M1) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _M2) & _MASK32
    return x ^ (x >> 16)


def _hash32_i32(x: torch.Tensor) -> torch.Tensor:
    # the same hash on int32 tensors (half the memory traffic on CPU): products wrap mod 2^32, shifts are made
    # logical by masking the sign extension; updates in place
    x ^= (x >> 16) & 0xFFFF
    x *= _M1
    x ^= (x >> 15) & 0x1FFFF
    x *= _M2 - (1 << 32)
    x ^= (x >> 16) & 0xFFFF
    return x


_OFFSET_HASH: dict[tuple[int, str], torch.Tensor] = {}


def _offset_hash_ref(n: int, device: torch.device) -> torch.Tensor:
    # hash32(vocabulary index) as int32 bits, the same for every row: computed once per vocabulary size
    key = (n, str(device))
    if key not in _OFFSET_HASH:
        h = _hash32_ref(torch.arange(n, dtype=torch.int64, device=device))
        _OFFSET_HASH[key] = (h - ((h >> 31) << 32)).to(torch.int32)
    return _OFFSET_HASH[key]


def uniform_ref(seeds: torch.Tensor, n: int) -> torch.Tensor:
    """[B] int64 seeds -> [B, n] float32 uniforms in (0, 1), never 0 or 1 (23 random bits, centred)."""
    lo, hi = seeds[:, None] & _MASK32, (seeds[:, None] >> 32) & _MASK32
    key = _hash32_ref(lo ^ _hash32_ref(hi))
    key = (key - ((key >> 31) << 32)).to(torch.int32)  # the same 32 bits, signed
    h = _hash32_i32(_offset_hash_ref(n, seeds.device)[None, :] ^ key)
    return (((h >> 9) & 0x7FFFFF).to(torch.float32) + 0.5) * (1.0 / (1 << 23))


def sample_tokens_ref(logits: torch.Tensor, temperature: torch.Tensor, seeds: torch.Tensor,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """logits [B, V] (any float dtype), temperature [B] fp32 (0 = greedy), seeds [B] int64 -> tokens [B] int64."""
    x = logits.float()
    tokens = x.argmax(dim=-1)
    rows = (temperature > 0).nonzero()[:, 0]  # only sampled rows pay for the noise
    if len(rows):
        noise = -torch.log(-torch.log(uniform_ref(seeds[rows], x.shape[1])))
        tokens[rows] = (x[rows] / temperature[rows].float()[:, None] + noise).argmax(dim=-1)
    return tokens if out is None else out.copy_(tokens)


# ---- Triton ----------------------------------------------------------------------------------------------------

@triton.jit
def _hash32(x):
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


@triton.jit
def _chunk_max_kernel(logits_ptr, temp_ptr, seed_ptr, val_ptr, idx_ptr, stride_l, V, NUM_CHUNKS,
                      CHUNK: tl.constexpr, PDL: tl.constexpr = False):
    # grid (B, NUM_CHUNKS): the best score and its index in one chunk of one row
    pdl_enter(PDL)
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    offs = chunk * CHUNK + tl.arange(0, CHUNK)
    mask = offs < V
    x = tl.load(logits_ptr + row * stride_l + offs, mask=mask, other=float("-inf")).to(tl.float32)
    t = tl.load(temp_ptr + row)
    if t > 0:
        seed = tl.load(seed_ptr + row)
        lo, hi = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
        key = _hash32(lo ^ _hash32(hi))
        h = _hash32(_hash32(offs.to(tl.int64)) ^ key)
        u = ((h >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)
        x = x / t - tl.log(-tl.log(u))
        x = tl.where(mask, x, float("-inf"))
    best = tl.max(x, axis=0)
    # the first index holding the maximum (an all -inf chunk points at its first entry, which is < V)
    at = tl.min(tl.where(x == best, offs, V + CHUNK), axis=0)
    tl.store(val_ptr + row * NUM_CHUNKS + chunk, best)
    tl.store(idx_ptr + row * NUM_CHUNKS + chunk, at)


@triton.jit
def _pick_kernel(val_ptr, idx_ptr, out_ptr, NUM_CHUNKS, BLOCK_C: tl.constexpr, PDL: tl.constexpr = False):
    # grid (B,): the first chunk holding the row's best score wins (its index is the smallest)
    pdl_enter(PDL)
    row = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    mask = c < NUM_CHUNKS
    v = tl.load(val_ptr + row * NUM_CHUNKS + c, mask=mask, other=float("-inf"))
    best = tl.max(v, axis=0)
    first = tl.min(tl.where((v == best) & mask, c, NUM_CHUNKS), axis=0)
    first = tl.minimum(first, NUM_CHUNKS - 1)
    tl.store(out_ptr + row, tl.load(idx_ptr + row * NUM_CHUNKS + first).to(tl.int64))


def sample_tokens_triton(logits: torch.Tensor, temperature: torch.Tensor, seeds: torch.Tensor,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    if logits.dim() != 2 or logits.stride(1) != 1:
        raise ValueError(f"logits must be [B, V] with contiguous rows, got shape {tuple(logits.shape)}, "
                         f"strides {logits.stride()}")
    b, v = logits.shape
    if temperature.shape != (b,) or temperature.dtype != torch.float32:
        raise ValueError(f"temperature must be float32 [{b}], got {temperature.dtype} {tuple(temperature.shape)}")
    if seeds.shape != (b,) or seeds.dtype != torch.int64:
        raise ValueError(f"seeds must be int64 [{b}], got {seeds.dtype} {tuple(seeds.shape)}")
    if out is None:
        out = torch.empty(b, dtype=torch.int64, device=logits.device)
    if b == 0:
        return out
    num_chunks = triton.cdiv(v, CHUNK)
    vals = torch.empty(b, num_chunks, dtype=torch.float32, device=logits.device)
    idxs = torch.empty(b, num_chunks, dtype=torch.int32, device=logits.device)
    _chunk_max_kernel[(b, num_chunks)](logits, temperature, seeds, vals, idxs, logits.stride(0), v, num_chunks,
                                       CHUNK=CHUNK, num_warps=8, **pdl_launch(logits.device))
    _pick_kernel[(b,)](vals, idxs, out, num_chunks, BLOCK_C=max(triton.next_power_of_2(num_chunks), 2),
                       **pdl_launch(logits.device))
    return out


def sample_tokens(logits: torch.Tensor, temperature: torch.Tensor, seeds: torch.Tensor,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    return (sample_tokens_triton if on_cuda(logits) else sample_tokens_ref)(logits, temperature, seeds, out)


# ---- async scheduling: input ids still on the device -------------------------------------------------------------

def pending_input_ids_ref(input_ids: torch.Tensor, prev_rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """input_ids [B] int64, prev_rows [B] int64, tokens [R] int64 (the previous step's sampled tokens) -> [B]: row i
    is tokens[prev_rows[i]] where prev_rows[i] >= 0, else input_ids[i]."""
    return torch.where(prev_rows >= 0, tokens[prev_rows.clamp(min=0)], input_ids)


@triton.jit
def _pending_ids_kernel(ids_ptr, rows_ptr, tok_ptr, out_ptr, B, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < B
    ids = tl.load(ids_ptr + offs, mask=mask, other=0)
    rows = tl.load(rows_ptr + offs, mask=mask, other=-1)
    prev = tl.load(tok_ptr + tl.maximum(rows, 0), mask=mask & (rows >= 0), other=0)
    tl.store(out_ptr + offs, tl.where(rows >= 0, prev, ids), mask=mask)


def pending_input_ids_triton(input_ids: torch.Tensor, prev_rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    if input_ids.dtype != torch.int64 or prev_rows.dtype != torch.int64 or tokens.dtype != torch.int64 or \
            input_ids.shape != prev_rows.shape or input_ids.dim() != 1:
        raise ValueError(f"pending_input_ids needs int64 input_ids [B], prev_rows [B] and tokens [R], got "
                         f"{input_ids.dtype} {tuple(input_ids.shape)}, {prev_rows.dtype} {tuple(prev_rows.shape)}, "
                         f"{tokens.dtype} {tuple(tokens.shape)}")
    out = torch.empty_like(input_ids)
    block = 256
    _pending_ids_kernel[(triton.cdiv(input_ids.numel(), block),)](input_ids, prev_rows, tokens, out,
                                                                  input_ids.numel(), BLOCK=block)
    return out


def pending_input_ids(input_ids: torch.Tensor, prev_rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    fn = pending_input_ids_triton if on_cuda(input_ids, prev_rows, tokens) else pending_input_ids_ref
    return fn(input_ids, prev_rows, tokens)
