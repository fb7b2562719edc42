"""The tensor-core GEMV at decode row counts (kvant.kernels.w4a16_mma_gemv) against the checkpoint-layout torch reference on
fresh random inputs under the interpreter, and compiled for sm_90 on the CPU (its register-level layout claims: the
weight reaches the MMA without shared memory, in 16-byte loads)."""
import pytest
import torch

from kvant.kernels import w4a16_mma_gemv
from kvant.kernels.w4a16_gemm import w4a16_gemm_ref

from .compile_check import run_without_interpreter

from .test_w4a16_repacked import TOL, _case, _repacked, interpreter_only


@interpreter_only
# (130, 544, 32): N off every tile and off a packed zero-point word's 8 rows, K = 17 blocks of 32 (odd splits);
# config = (BLOCK_N, num_warps, num_stages, waves, prefetch); waves 0: one split, 4: K split (8 interpreter SMs)
@pytest.mark.parametrize("m,n,k,group,asym,dtype,config", [
    (1, 130, 544, 32, False, torch.bfloat16, (64, 4, 1, 4, True)),
    (1, 130, 544, 32, True, torch.float16, (64, 4, 1, 0, False)),
    (2, 72, 256, 64, True, torch.bfloat16, (64, 4, 3, 4, False)),
    (3, 130, 512, 128, False, torch.float16, (128, 8, 1, 4, True)),
    (4, 130, 1024, 128, True, torch.bfloat16, (128, 8, 3, 0, False)),
    (4, 40, 1024, 128, False, torch.bfloat16, (64, 4, 1, 4, True)),
    (1, 130, 544, 32, True, torch.bfloat16, (64, 4, 1, 4, 2)),  # two blocks ahead, splits of 2-3 blocks
    (2, 130, 1024, 128, False, torch.float16, (64, 4, 1, 0, 2)),  # two blocks ahead, one split of 8
    (1, 130, 544, 32, True, torch.bfloat16, (64, 4, 1, 4, True, True)),  # pairs of blocks, odd splits (last pair half)
    (3, 130, 1024, 128, False, torch.bfloat16, (128, 8, 1, 0, True, True)),  # pairs of blocks, one split of 8
    (16, 72, 512, 64, False, torch.float16, (64, 4, 1, 4, True)),
    (21, 130, 512, 128, True, torch.bfloat16, (64, 4, 1, 4, True)),  # 32 token columns, 11 of them padding
    (64, 72, 256, 64, False, torch.bfloat16, (128, 8, 3, 0, False)),  # 64 token columns
    (100, 130, 256, 128, True, torch.bfloat16, (128, 8, 1, 4, True)),  # 128 token columns, K split
    (5, 130, 544, 32, True, torch.float16, (64, 4, 1, 4, True, False, True)),  # block scaled in 16 bits, MMAs chained
    (100, 72, 512, 128, False, torch.bfloat16, (128, 8, 3, 0, False, False, True)),  # the same at 128 token columns
    (200, 130, 512, 64, True, torch.bfloat16, (128, 8, 3, 4, False, False, True)),  # 256 token columns, K split
    (3, 130, 1024, 128, True, torch.bfloat16, (64, 4, 1, 4, True, True, True)),  # pairs, scaled in 16 bits
    (150, 130, 512, 128, True, torch.bfloat16, (64, 4, 3, 4, False, False, True, 64)),  # 3 token tiles, K split
    (40, 72, 544, 32, False, torch.float16, (64, 4, 1, 0, True, False, False, 16)),  # 3 tiles of 16, per-block scales
    (300, 130, 256, 64, False, torch.bfloat16, None),  # past 256 rows: tiles of 256 (the default config)
])
def test_mma_gemv(m, n, k, group, asym, dtype, config):
    x, packed, scale, zp = _case(m * 100 + n + k + asym, m, n, k, group, asym, dtype)
    out = w4a16_mma_gemv.w4a16_mma_gemv_triton(x, *_repacked(packed, scale, group, zp), config=config)
    torch.testing.assert_close(out, w4a16_gemm_ref(x, packed, scale, group, zp), **TOL[dtype])


@interpreter_only
@pytest.mark.parametrize("m,dtype,asym,config", [(1, torch.bfloat16, False, (64, 4, 1, 4, True)),
                                                 (3, torch.float16, True, (64, 4, 1, 4, True)),
                                                 (20, torch.bfloat16, True, (64, 4, 1, 4, True)),
                                                 (4, torch.bfloat16, False, (128, 8, 1, 2, True)),  # <= 16 rows
                                                 (2, torch.bfloat16, True, (64, 4, 1, 4, True, True))])  # pairs
def test_mma_gemv_with_silu_mul_fused(m, dtype, asym, config):
    # gate_up [M, 2K] in: silu(gate) * up formed as x is loaded, rounded to 16 bits as the activation kernel rounds
    # it, so the result equals the GEMV of the unfused activation (the torch one, which rounds the same way)
    from kvant.kernels.activation import silu_and_mul_ref

    x, packed, scale, zp = _case(m * 10 + asym, m, 130, 512, 128, asym, dtype)
    gate_up = torch.cat([x * 2, torch.randn(m, 512, generator=torch.Generator().manual_seed(m)).to(dtype)], dim=1)
    qw, s, _, z = _repacked(packed, scale, 128, zp)
    fused = w4a16_mma_gemv.w4a16_mma_gemv_triton(gate_up, qw, s, 128, z, config=config, silu_mul=True)
    unfused = w4a16_mma_gemv.w4a16_mma_gemv_triton(silu_and_mul_ref(gate_up), qw, s, 128, z, config=config)
    torch.testing.assert_close(fused, unfused, atol=0, rtol=0)
    torch.testing.assert_close(fused, w4a16_gemm_ref(silu_and_mul_ref(gate_up), packed, scale, 128, zp), **TOL[dtype])
    with pytest.raises(ValueError, match="gate_up"):
        w4a16_mma_gemv.w4a16_mma_gemv_triton(x, qw, s, 128, z, silu_mul=True)


@interpreter_only
def test_mma_gemv_split_k_reduces_in_kernel_and_resets():
    from kvant.kernels.splitk import _buffers

    for seed, m, config in ((1, 2, (64, 4, 1, 8, True)), (2, 2, (64, 4, 1, 8, True)),
                            (3, 40, (64, 4, 1, 8, True, False, True, 16))):  # three token tiles, each split
        x, packed, scale, zp = _case(seed, m, 40, 1024, 128, asym=seed == 2)
        out = w4a16_mma_gemv.w4a16_mma_gemv_triton(x, *_repacked(packed, scale, 128, zp), config=config)
        torch.testing.assert_close(out, w4a16_gemm_ref(x, packed, scale, 128, zp), **TOL[torch.bfloat16])
        assert all(int(cnt.abs().sum()) == 0 for _, cnt in _buffers[x.device])


def test_mma_gemv_bad_operands_are_named():
    w, s = torch.zeros(64, 16, dtype=torch.int32), torch.ones(4, 64, dtype=torch.bfloat16)
    x = torch.zeros(1, 128, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="at least one row"):
        w4a16_mma_gemv.w4a16_mma_gemv_triton(x[:0], w, s, 32)
    with pytest.raises(ValueError, match="token tile"):
        w4a16_mma_gemv.w4a16_mma_gemv_triton(x, w, s, 32, config=(64, 4, 1, 2, True, False, True, 48))
    with pytest.raises(ValueError, match="group size >= 32"):
        w4a16_mma_gemv.w4a16_mma_gemv_triton(x, w, torch.ones(8, 64, dtype=torch.bfloat16), 16)
    with pytest.raises(ValueError, match="BLOCK_N"):
        w4a16_mma_gemv.w4a16_mma_gemv_triton(x, w, s, 32, config=(64, 8, 1, 2, True))
    with pytest.raises(ValueError, match="x must be"):
        w4a16_mma_gemv.w4a16_mma_gemv_triton(x.float(), w, s, 32)


SCRIPT = """
import re
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kvant.kernels import w4a16_mma_gemv as g

names = ["x_ptr", "w_ptr", "s_ptr", "z_ptr", "out_ptr", "ws_ptr", "cnt_ptr", "M", "N", "K", "stride_xw", "stride_wn",
         "stride_om", "BLOCKS_PER_SPLIT", "UP_WORDS"]
aligned = {i for i, n in enumerate(names) if n not in ("M", "BLOCKS_PER_SPLIT", "UP_WORDS")}  # a Llama-shaped launch's
for dt, hz, split, group, bn, warps, stages, prefetch, rows in [
        ("bf16", False, 4, 128, 64, 4, 1, True, 1), ("bf16", True, 1, 128, 128, 8, 1, False, 4),
        ("fp16", True, 2, 64, 64, 4, 1, False, 2), ("bf16", False, 2, 128, 64, 4, 3, False, 1),
        ("bf16", False, 3, 32, 64, 4, 1, True, 16), ("bf16", False, 2, 128, 128, 8, 1, True, 32),
        ("bf16", True, 2, 128, 128, 8, 1, False, 64), ("bf16", False, 2, 128, 128, 8, 1, True, 128),
        ("bf16", False, 4, 128, 64, 4, 1, True, -1), ("bf16", True, 4, 128, 64, 4, 1, 2, 1),
        ("bf16", False, 2, 128, 128, 8, 1, 3, 1), ("bf16", True, 2, 128, 128, 8, 3, 4, 256),
        ("bf16", False, 2, 128, 128, 8, 1, 4, 128)]:  # rows -1: one row with SiLU·mul fused in; prefetch 3: pairs;
    # prefetch 4: none, the block scaled in 16 bits (SCALE_IN)
    silu, rows = rows < 0, abs(rows)
    ptrs = [f"*{dt}", "*i32", f"*{dt}", f"*{dt}", f"*{dt}", "*fp32", "*i32"]
    constexprs = dict(HAS_ZP=hz, SPLIT=split, BF16=dt == "bf16", UPCAST=False, GROUP=group, VEC=min(4, group // 32),
                      BLOCK_N=bn, ROWS=rows, WARPS=warps, PREFETCH=0 if prefetch == 4 else min(int(prefetch), 2), SILU=silu,
                      PDL=bool(prefetch), PAIR=prefetch == 3, SCALE_IN=prefetch == 4)
    sig = dict(zip(names, ptrs + ["i32"] * 8), **{k: "constexpr" for k in constexprs})
    src = ASTSource(fn=g._mma_gemv_kernel, signature=sig, constexprs=constexprs,
                    attrs={(i,): [["tt.divisibility", 16]] for i in aligned})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    ptx, ttgir = k.asm["ptx"], k.asm["ttgir"]
    assert ".target sm_90" in ptx and "wgmma.mma_async" in ptx, constexprs
    assert ("griddepcontrol.wait" in ptx) == constexprs["PDL"], constexprs
    if stages == 1 and group >= 64:  # the weight goes from its load to the MMA in registers (at g32 it does not:
        # one word per thread lays out differently), so the only shared tile is x's; VEC words in one load
        assert "ttg.local_load" not in ttgir, constexprs
        assert ttgir.count("ttg.local_alloc") == 1 + constexprs["PAIR"], constexprs  # x's tile, one per block of a step
        width = "v4" if group >= 128 else "v2"
        assert re.search(r"ld\\.global\\.L1::evict_first[.\\w:]*\\." + width + r"\\.b32", ptx), constexprs
    if hz:
        assert ("fma.rn.bf16x2" if dt == "bf16" else "fma.rn.f16x2") in ptx, constexprs
    print("compiled", constexprs)
"""


def test_mma_gemv_compiles_for_sm90():
    assert run_without_interpreter(SCRIPT).count("compiled") == 13
