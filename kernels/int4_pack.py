import torch

# compressed-tensors pack-quantized: value + 8 (offset binary), element j of a word in bits 4j..4j+3
SHIFTS = tuple(range(0, 32, 4))


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    # q int8 [N, K] in [-8, 7], K % 8 == 0 -> int32 [N, K // 8]
    assert q.dim() == 2 and q.shape[1] % 8 == 0, f"pack_int4 needs [N, K] with K % 8 == 0, got {tuple(q.shape)}"
    nibbles = (q.to(torch.int32) + 8).reshape(q.shape[0], -1, 8)  # [N, K // 8, 8] in [0, 15]
    shifts = torch.tensor(SHIFTS, dtype=torch.int32, device=q.device)
    # int32 wraps for the top nibble (bit 31), which is the two's-complement bit pattern compressed-tensors writes
    return (nibbles << shifts).sum(dim=-1, dtype=torch.int32)


def unpack_int4(p: torch.Tensor, k: int) -> torch.Tensor:
    # p int32 [N, W] -> int8 [N, k] in [-8, 7]
    shifts = torch.tensor(SHIFTS, dtype=torch.int32, device=p.device)
    return (((p[..., None] >> shifts) & 0xF).reshape(p.shape[0], -1)[:, :k] - 8).to(torch.int8)
