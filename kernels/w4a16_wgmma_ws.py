"""W4A16 on Hopper's wgmma with warp specialization, in Gluon: the INT4 tile whose dequantization runs in warps of its
own, beside the warps that issue the MMAs.

Why it exists: in `w4a16_wgmma` the same warps dequantize step k + 1 into a shared A tile (store, proxy fence, CTA
barrier) and issue and wait for step k's asynchronous wgmma, so every step pays the dequantization, the barrier and
the wait on one critical path; at 256 rows, where bf16 is close to compute bound, that kernel reaches only about
0.75-0.80x of bf16 cuBLAS on Llama's gate_up. Here two partitions of one CTA run side by side, coupled by mbarriers
(producer/consumer, as Machete and Marlin-style kernels do):

- "dequant" (one warpgroup, 96 registers): waits for the TMA of a K step's weight words, group scale row (and zero
  row), reads them, refills that stage of the weight ring with step k + STAGES, dequantizes exactly as
  `w4a16_wgmma._step` does (MAGIC trick, the group scale rounded once to 16 bits) and stores the 16-bit tile into a
  ring of A_STAGES shared A buffers ("a_ready" / "a_empty" barriers). With two such warpgroups (a config's seventh
  field) each takes every other K step, and so every other stage of both rings.
- "mma" (the default partition, one warpgroup per 64 weight rows): waits for an A buffer and the TMA of its x tile,
  issues the wgmma asynchronously (swap-AB: the weight rows are the MMA's M, the tokens its N), waits only for the
  step before's, then hands that step's A buffer back and refills its x stage. After the loop the same warps run the
  epilogue (a store, or the split-K partial and last-arriver reduction of `w4a16_wgmma`).

Each TMA ring has a single reader, which issues the refills itself (one thread; a TMA issue costs next to nothing), so
the rings need no "empty" barriers. A separate one-warp load partition, the textbook layout, does not fit: Triton
gives it a warpgroup of its own (16 warps at BLOCK_N 128), ptxas then caps every thread at 65536 / 512 = 128
registers (setmaxnreg moves registers between warpgroups at run time but does not raise ptxas's limit), and the
accumulator of a 128 x 256 tile over two warpgroups alone is 128 registers a thread. With 12 warps the cap is 168.

Limits are those of `w4a16_wgmma` (the caller checks `supported`): sm_90 only; 16-bit x whose rows are 16-byte
aligned; K a multiple of 64; group size a multiple of 64; N a multiple of 8; contiguous scales (and zeros) in fp32,
bf16 or fp16, held in shared memory in the dtype they are stored in. STAGES and A_STAGES are at least 2: with one A
buffer the dequant warps would wait for step k - 1's wgmma to finish, which the mma warps learn only at step k, whose
A tile is not written yet; with one x stage the mma warps would wait for a copy they issue only after it (deadlocks).
Gluon kernels do not run under TRITON_INTERPRET: CI compiles this file for sm_90
(tests/kernels/test_compile_sm90_wgmma.py) and the GPU tests (tests/kernels/test_gpu.py) run it against
the torch reference.
"""
import torch

from kvant.kernels.w4a16_layout import check_repacked
from kvant.kernels.w4a16_wgmma import BLOCK_K, HAVE_GLUON as _HAVE_BASE, launch, supported as _base_supported

HAVE_GLUON = False
if _HAVE_BASE:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, warpgroup_mma, \
        warpgroup_mma_wait

    from kvant.kernels.w4a16_wgmma import _cta_barrier, _dequant, _epilogue, _program_tile, _stage_operands, _tma_load
    HAVE_GLUON = hasattr(gl, "warp_specialize")  # Gluon before 3.5's warp specialization: the kernel is not offered

DQ_WARPS = 4  # the dequant partition: one warpgroup
# registers per thread the dequant warps ask for (setmaxnreg; the mma warps get the rest): a step's words
# (BN * BW / 128 per thread), their 16-bit results and the packed scales and zeros of their rows
DQ_REGS = 96
if HAVE_GLUON:  # what the jitted code reads of the above (Triton reads only constexpr globals)
    _DQ_WARPS, _DQ_REGS = gl.constexpr(DQ_WARPS), gl.constexpr(DQ_REGS)
# (BLOCK_N, mma_warps, STAGES, A_STAGES, waves, tokens[, dequant warpgroups]): weight rows per program, warps of the
# mma partition (one warpgroup per 64 weight rows), TMA ring depth, dequantized A ring depth, split-K target in
# programs per SM, token tile (16..256, a power of two), and one or two dequant warpgroups (two take alternate K
# steps: at 128 tokens and fewer one warpgroup's dequantization is slower than the MMAs it feeds, H100 2026-12-07;
# STAGES and A_STAGES are then even, and with 16 warps ptxas caps a thread at 128 registers, so 256-token tiles
# over BLOCK_N 128 do not fit)
DEFAULT_CONFIG = (128, 8, 4, 2, 1, 128)
CONFIGS = ((128, 8, 4, 2, 1, 64), (128, 8, 4, 3, 2, 64), (128, 8, 4, 2, 1, 128), (128, 8, 3, 2, 1, 256),
           (128, 8, 4, 2, 1, 256), (64, 4, 4, 2, 2, 64), (64, 4, 4, 2, 1, 128), (64, 4, 4, 2, 1, 256),
           (128, 8, 4, 2, 1, 128, 2), (128, 8, 4, 4, 1, 128, 2), (128, 8, 4, 2, 2, 64, 2), (64, 4, 4, 2, 1, 256, 2))


if HAVE_GLUON:
    @gluon.jit
    def _issue_w(w_desc, s_desc, z_desc, w_ready, w_s, s_s, z_s, i, first, off_n, G, HAS_ZP: gl.constexpr,
                 STAGES: gl.constexpr):
        # TMA of the split's K step i's weight words, scale row (and zero row) into weight stage i % STAGES
        st = i % STAGES
        bar = w_ready.index(st)
        BK: gl.constexpr = 8 * w_desc.block_type.shape[1]
        mbarrier.expect(bar, w_desc.block_type.nbytes + s_desc.block_type.nbytes + HAS_ZP * z_desc.block_type.nbytes)
        k0 = (first + i) * BK
        _tma_load(w_desc, [off_n, k0 // 8], bar, w_s.index(st))
        _tma_load(s_desc, [k0 // G, off_n], bar, s_s.index(st))
        if HAS_ZP:
            _tma_load(z_desc, [k0 // G, off_n], bar, z_s.index(st))

    @gluon.jit
    def _issue_x(x_desc, x_ready, x_s, i, first, off_m, STAGES: gl.constexpr):
        # TMA of the split's K step i's x tile into x stage i % STAGES
        st = i % STAGES
        bar = x_ready.index(st)
        mbarrier.expect(bar, x_desc.block_type.nbytes)
        _tma_load(x_desc, [off_m, (first + i) * x_desc.block_type.shape[1]], bar, x_s.index(st))

    @gluon.jit
    def _dequant_partition(w_desc, s_desc, z_desc, w_s, s_s, z_s, w_ready, a_s, a_ready, a_empty, first, n_steps,
                           off_n, G, HAS_ZP: gl.constexpr, STAGES: gl.constexpr, A_STAGES: gl.constexpr,
                           PART: gl.constexpr, PARTS: gl.constexpr):
        # the dequant warps of partition PART of PARTS: for each of its K steps (PART, PART + PARTS, ...), the words
        # and scales from the weight ring to registers, the ring stage refilled at once with step i + STAGES (these
        # warps are its only readers: STAGES and A_STAGES are multiples of PARTS, so a stage's steps all fall to one
        # partition), then the 16-bit tile into the A ring for the mma warps
        BN: gl.constexpr = w_desc.block_type.shape[0]
        BW: gl.constexpr = w_desc.block_type.shape[1]
        BK: gl.constexpr = 8 * BW
        DT: gl.constexpr = a_s.dtype
        BF16: gl.constexpr = DT == gl.bfloat16
        MAGIC: gl.constexpr = 128.0 if BF16 else 1024.0
        # the words as loaded from shared memory: 4 lanes along a row's BW words, 8 rows per warp (w4a16_wgmma's
        # layout, over this partition's warps)
        wl: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, BW // 4], threads_per_warp=[8, 4],
                                            warps_per_cta=[_DQ_WARPS, 1], order=[1, 0])
        rl: gl.constexpr = gl.SliceLayout(1, wl)
        for i in range(PART, n_steps, PARTS):
            st = i % STAGES
            mbarrier.wait(w_ready.index(st), (i // STAGES) & 1)
            words, scale, zero = _stage_operands(w_s, s_s, z_s, st, wl, rl, HAS_ZP, MAGIC)
            if i + STAGES < n_steps:
                # every warp's reads of the stage (generic proxy) precede the TMA that overwrites it (async proxy)
                fence_async_shared()
                _cta_barrier()
                _issue_w(w_desc, s_desc, z_desc, w_ready, w_s, s_s, z_s, i + STAGES, first, off_n, G, HAS_ZP, STAGES)
            w = _dequant(words, scale, zero, DT, BF16, BN, BK)
            ab = i % A_STAGES
            # the A buffer's last reader, step i - A_STAGES's wgmma, must be done. a_empty is not pre-arrived: a
            # fresh mbarrier counts the phase before its first (parity 1) as complete, so waiting with the inverted
            # parity lets the first A_STAGES steps through at once
            mbarrier.wait(a_empty.index(ab), ((i // A_STAGES) & 1) ^ 1)
            a_s.index(ab).store(w)
            fence_async_shared()  # generic-proxy stores -> the wgmma's async-proxy reads
            # all four warps' stores and fences precede the arrive, which one thread makes (Triton 3.9 adds such a
            # barrier itself, 3.6 does not)
            _cta_barrier()
            mbarrier.arrive(a_ready.index(ab), count=1)

    @gluon.jit
    def _mma_step(acc, i, x_desc, x_s, x_ready, a_s, a_ready, a_empty, first, n_steps, off_m, STAGES: gl.constexpr,
                  A_STAGES: gl.constexpr):
        # K step i: wait for its A buffer and x tile, issue its wgmma, wait for step i - 1's, then hand step i - 1's
        # A buffer back to the dequant warps and refill its x stage with step i - 1 + STAGES
        ab = i % A_STAGES
        mbarrier.wait(a_ready.index(ab), (i // A_STAGES) & 1)
        mbarrier.wait(x_ready.index(i % STAGES), (i // STAGES) & 1)
        acc = warpgroup_mma(a_s.index(ab), x_s.index(i % STAGES).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
        if i > 0:
            # the wait is per warpgroup: every warpgroup must be past it before the one arriving (and copying)
            # thread hands step i - 1's buffers on. Inside a partition the barrier is a named one over that
            # partition's warps (bar.sync id, 32 * warps), not the CTA's
            _cta_barrier()
            mbarrier.arrive(a_empty.index((i - 1) % A_STAGES), count=1)
            if i - 1 + STAGES < n_steps:
                _issue_x(x_desc, x_ready, x_s, i - 1 + STAGES, first, off_m, STAGES)
        return acc

    @gluon.jit
    def _mma_partition(x_desc, x_s, x_ready, a_s, a_ready, a_empty, first, n_steps, off_m, STAGES: gl.constexpr,
                       A_STAGES: gl.constexpr, mma: gl.constexpr):
        BN: gl.constexpr = a_s.type.shape[1]
        TOK: gl.constexpr = x_s.type.shape[1]
        # step 0 peeled off the loop: on no path is the accumulator defined or read by anything but the wgmmas
        # between a wgmma and its wait (ptxas serializes every wgmma otherwise: C7514/C7515)
        acc = _mma_step(gl.zeros([BN, TOK], gl.float32, layout=mma), 0, x_desc, x_s, x_ready, a_s, a_ready, a_empty,
                        first, n_steps, off_m, STAGES, A_STAGES)
        for i in range(1, n_steps):
            acc = _mma_step(acc, i, x_desc, x_s, x_ready, a_s, a_ready, a_empty, first, n_steps, off_m, STAGES,
                            A_STAGES)
        # the last step's A buffer is not handed back: nothing waits for it any more. A tuple: warp_specialize
        # returns the default partition's results as a tuple in Triton 3.6 and as returned from 3.7
        return (warpgroup_mma_wait(num_outstanding=0, deps=(acc,)),)

    @gluon.jit
    def _w4a16_wgmma_ws_kernel(x_desc, w_desc, s_desc, z_desc, out_ptr, ws_ptr, cnt_ptr, M, N, K, G: gl.constexpr,
                               stride_om, STEPS_PER_SPLIT, HAS_ZP: gl.constexpr, SPLIT: gl.constexpr,
                               STAGES: gl.constexpr, A_STAGES: gl.constexpr, DQ_PARTS: gl.constexpr,
                               num_warps: gl.constexpr):
        BN: gl.constexpr = w_desc.block_type.shape[0]
        BW: gl.constexpr = w_desc.block_type.shape[1]
        BK: gl.constexpr = 8 * BW
        TOK: gl.constexpr = x_desc.block_type.shape[0]
        DT: gl.constexpr = x_desc.dtype

        pid_m, pid_n, pid_k, off_m, off_n, first, n_steps = _program_tile(K, STEPS_PER_SPLIT, TOK, BN, BK)

        # acc [BN, TOK] = W tile @ x tile^T; one m64nTOKk16 wgmma per warpgroup per 16 of K
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                      instr_shape=[16, TOK, 16])
        a_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BN, BK], DT)
        # two TMA rings of STAGES stages, each with one reader partition, which refills a stage itself once it is
        # done with it (so no "empty" barriers): x tiles for the mma warps, weight words, scales (and zeros) for the
        # dequant warps. Between them the A ring of dequantized tiles, with a_ready (the tile is stored) and a_empty
        # (its wgmma is done) barriers. Every barrier counts 1: TMA bytes under one expect, or one thread's arrive
        x_s = gl.allocate_shared_memory(DT, [STAGES, TOK, BK], x_desc.layout)
        w_s = gl.allocate_shared_memory(gl.int32, [STAGES, BN, BW], w_desc.layout)
        s_s = gl.allocate_shared_memory(s_desc.dtype, [STAGES, 1, BN], s_desc.layout)  # 16- or 32-bit, as stored
        z_s = gl.allocate_shared_memory(z_desc.dtype, [STAGES, 1, BN], z_desc.layout)  # unused where symmetric
        a_s = gl.allocate_shared_memory(DT, [A_STAGES, BN, BK], a_layout)
        x_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        w_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        a_ready = gl.allocate_shared_memory(gl.int64, [A_STAGES, 1], mbarrier.MBarrierLayout())
        a_empty = gl.allocate_shared_memory(gl.int64, [A_STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(x_ready.index(i), count=1)
            mbarrier.init(w_ready.index(i), count=1)
        for i in gl.static_range(A_STAGES):
            mbarrier.init(a_ready.index(i), count=1)
            mbarrier.init(a_empty.index(i), count=1)
        for i in gl.static_range(STAGES):  # prologue: the first STAGES steps of both rings in flight
            if i < n_steps:
                _issue_w(w_desc, s_desc, z_desc, w_ready, w_s, s_s, z_s, i, first, off_n, G, HAS_ZP, STAGES)
                _issue_x(x_desc, x_ready, x_s, i, first, off_m, STAGES)

        if DQ_PARTS == 1:
            acc = gl.warp_specialize([
                (_mma_partition, (x_desc, x_s, x_ready, a_s, a_ready, a_empty, first, n_steps, off_m, STAGES,
                                  A_STAGES, mma)),
                (_dequant_partition, (w_desc, s_desc, z_desc, w_s, s_s, z_s, w_ready, a_s, a_ready, a_empty, first,
                                      n_steps, off_n, G, HAS_ZP, STAGES, A_STAGES, 0, 1)),
            ], [_DQ_WARPS], [_DQ_REGS])[0]
        else:  # two dequant warpgroups, on alternate K steps
            acc = gl.warp_specialize([
                (_mma_partition, (x_desc, x_s, x_ready, a_s, a_ready, a_empty, first, n_steps, off_m, STAGES,
                                  A_STAGES, mma)),
                (_dequant_partition, (w_desc, s_desc, z_desc, w_s, s_s, z_s, w_ready, a_s, a_ready, a_empty, first,
                                      n_steps, off_n, G, HAS_ZP, STAGES, A_STAGES, 0, 2)),
                (_dequant_partition, (w_desc, s_desc, z_desc, w_s, s_s, z_s, w_ready, a_s, a_ready, a_empty, first,
                                      n_steps, off_n, G, HAS_ZP, STAGES, A_STAGES, 1, 2)),
            ], [_DQ_WARPS, _DQ_WARPS], [_DQ_REGS, _DQ_REGS])[0]
        for i in gl.static_range(STAGES):
            mbarrier.invalidate(x_ready.index(i))
            mbarrier.invalidate(w_ready.index(i))
        for i in gl.static_range(A_STAGES):
            mbarrier.invalidate(a_ready.index(i))
            mbarrier.invalidate(a_empty.index(i))

        # w4a16_wgmma's epilogue, in the mma warps (the dequant warps are done)
        _epilogue(acc, out_ptr, ws_ptr, cnt_ptr, M, N, stride_om, off_m, off_n, pid_m, pid_n, pid_k, SPLIT, mma,
                  num_warps)


def supported(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group_size: int, zeros=None) -> bool:
    """Whether this kernel can take the call: Gluon with warp specialization, and what `w4a16_wgmma.supported` asks
    (an sm_90 device, the shape and dtype limits above)."""
    return HAVE_GLUON and _base_supported(x, qweight, scales, group_size, zeros)


def w4a16_wgmma_ws(x, qweight, scales, group_size, zeros=None, config=None) -> torch.Tensor:
    """x [M, K] 16-bit -> [M, N] (the repacked layout of `w4a16_layout`); config = (BLOCK_N, mma_warps, STAGES,
    A_STAGES, waves, tokens[, dequant warpgroups]) as CONFIGS. Raises where `supported` says no."""
    check_repacked(x, qweight, scales, group_size, zeros, sixteen_bit=True)
    if not supported(x, qweight, scales, group_size, zeros):
        raise ValueError("w4a16_wgmma_ws needs Gluon with warp specialization, an sm_90 GPU, 16-bit x with 16-byte "
                         f"aligned rows, K a multiple of {BLOCK_K}, group size a multiple of {BLOCK_K} and N a "
                         f"multiple of 8; got x {tuple(x.shape)} {x.dtype} on {x.device}, group {group_size}, "
                         f"N {qweight.shape[0]}")
    config = tuple(config or DEFAULT_CONFIG)
    bn, warps, stages, a_stages, waves, tokens, parts = config + (1,) * (7 - len(config))
    if len(config) not in (6, 7) or warps not in (4, 8) or bn != 16 * warps or tokens not in (16, 32, 64, 128, 256) \
            or parts not in (1, 2) or stages < 2 or a_stages < 2 or stages % parts or a_stages % parts:
        raise ValueError(f"bad w4a16_wgmma_ws config {config}: mma warps 4 or 8 with BLOCK_N = 16 * warps, tokens a "
                         "power of two in 16..256, 1 or 2 dequant warpgroups, STAGES and A_STAGES >= 2 and "
                         "multiples of the dequant warpgroups")
    return launch(_w4a16_wgmma_ws_kernel, x, qweight, scales, group_size, zeros, bn, tokens, waves, STAGES=stages,
                  A_STAGES=a_stages, DQ_PARTS=parts, num_warps=warps)
