"""W4A16 on Hopper's asynchronous wgmma, written in Gluon: the INT4 tile whose dequantization overlaps its MMAs.

Why it exists: every form of the INT4 tensor-core tiles that Triton compiles (GEMV, swap-AB, wide) waits for each
wgmma right after issuing it (`warp_group_dot_wait {pendings = 0}` in the sm_90 compiles of Triton 3.6 and 3.9), so a
program never dequantizes step k + 1 while step k's MMA runs. At 64-256 rows that wait, not HBM, sets the time
(bench/RESULTS.md, issue 18). Gluon gives the kernel the wgmma's issue and wait, so here:

- TMA streams each K step's weight words, group scales (and zeros) and the x tile into a ring of STAGES shared-memory
  stages, with one mbarrier each; nothing is read by the threads from global memory in the loop.
- The threads dequantize step k's words (the repacked layout of `w4a16_layout`: one shift, one LOP3 and two packed
  bf16 FMAs per pair of weights, the group scale applied in 16 bits as `SCALE_IN` does) into one of two shared A
  buffers, then issue step k's wgmma asynchronously (A and x^T from shared memory, swap-AB: the weight rows are the
  MMA's M, the tokens its N) and wait only for step k - 1's. So step k + 1's dequantization runs under step k's MMA.
- Or (form 1, a config's sixth field) the dequantized weight goes to the wgmma as its register A operand, with no
  shared A tile, no proxy fence and no CTA barrier for it: each thread loads the words of its own A fragment (a
  quad of lanes shares a word, each lane taking its own nibble pair), so the 16-bit values land in the operand's
  registers as computed (`convert_layout(..., assert_trivial=True)` checks that at compile time). The loop is
  unrolled by two, so that consecutive steps' operands live in two register sets: step k + 1 is dequantized into
  the other set while step k's wgmma still reads its own (one set would be rewritten under the in-flight wgmma, the
  race of the first register form, removed 2026-12-07). The CI compile test checks the SASS for exactly that.
- Or (form 2) the register form with a loader warp of its own (warp specialization): it waits for a ring stage to be
  handed back and refills it by TMA, so the dequantizing MMA warps never issue a copy. Their loop has no CTA-wide
  barrier, only named ones over their own warps around the arrive by which one thread hands a stage back.
- Split-K without zero-fill or cast launches: partial tiles go to a workspace and the last split to arrive sums them
  (the same protocol as `splitk.store_or_reduce`, written again in Gluon: that function builds its offsets with
  `tl.arange`, which has no layout, and Gluon needs one for every tensor it creates).

Limits (the caller checks them and uses the Triton kernels otherwise): sm_90 only (wgmma, TMA); 16-bit x (bf16 or
fp16) whose rows are 16-byte aligned; K a multiple of 64; group size 64 or more; N a multiple of 8; contiguous scales
(and zeros) in fp32, bf16 or fp16, held in shared memory in the dtype they are stored in (TMA copies bytes: a 16-bit
buffer under fp32 scales overflowed, the engine's fault of 2026-12-07). Gluon kernels do not run under
TRITON_INTERPRET, so CI checks this file by sm_90 compiles and its torch reference, and the GPU tests run it against
the reference (tests/kernels/test_gpu.py).
"""
import torch
import triton

from kvant.kernels.dispatch import device_capability, num_sms
from kvant.kernels.splitk import split_count, splitk_buffers
from kvant.kernels.w4a16_layout import check_repacked

try:  # Gluon is experimental (Triton >= 3.5); without it the kernel is simply not offered
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma, \
        warpgroup_mma_wait
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    # the TMA load's name: async_copy_global_to_shared in Triton 3.5-3.6 (the device's), async_load from 3.7
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    _cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier  # the same rename, at 3.7
    HAVE_GLUON = True
except ImportError:  # pragma: no cover - depends on the installed Triton
    HAVE_GLUON = False

BLOCK_K = 64  # K per step: one 128-byte TMA box of 16-bit x per token row
# the loader form's TMA warp: registers per thread it asks for (setmaxnreg; the dequantizing MMA warps get the rest)
LOADER_REGS = 40
HAVE_WS = HAVE_GLUON and hasattr(gl, "warp_specialize")  # the loader form needs Gluon's warp specialization
if HAVE_GLUON:  # what the jitted code reads of the above (Triton reads only constexpr globals)
    _LOADER_REGS = gl.constexpr(LOADER_REGS)
# (BLOCK_N, num_warps, STAGES, waves, tokens[, form]): weight rows per program, warps (64 weight rows per warpgroup
# and MMA), ring depth, split-K target in programs per SM, token tile (16..256, a power of two), and how the
# dequantized weight reaches the wgmma: 0 (or absent) through a shared A tile; 1 (True) as its register operand
# (BLOCK_N = 16 * warps: one 16-row fragment per warp); 2 the same, with the TMA ring fed by a loader warp of its own
# (warp specialization), so the MMA warps never stop to refill it and meet no CTA-wide barrier in the loop. The first
# register form (2026-12-07) was removed: its loop rewrote the A registers of step k's in-flight HGMMA while
# computing step k + 1's (one register set per loop), and gave wrong sums at 128-token tiles on the H100. These
# alternate two sets.
DEFAULT_CONFIG = (128, 8, 4, 1, 64)
CONFIGS = ((128, 8, 4, 1, 64), (128, 8, 4, 2, 64), (128, 8, 3, 1, 128), (128, 8, 4, 1, 128), (64, 4, 4, 2, 64),
           (128, 8, 3, 1, 256), (64, 4, 4, 1, 128),
           (128, 8, 4, 1, 64, True), (128, 8, 4, 2, 64, True), (128, 8, 3, 1, 128, True), (128, 8, 4, 1, 128, True),
           (64, 4, 4, 2, 64, True), (128, 8, 3, 1, 256, True)) + (
    ((128, 8, 4, 1, 64, 2), (128, 8, 4, 2, 64, 2), (128, 8, 4, 1, 128, 2), (64, 4, 6, 2, 64, 2), (64, 4, 4, 1, 128, 2),
     (128, 8, 3, 1, 256, 2), (64, 4, 8, 4, 16, 2)) if HAVE_WS else ())


if HAVE_GLUON:
    @gluon.jit
    def _pair(words, z2, s2, SHIFT: gl.constexpr, BF16: gl.constexpr):
        # nibble pair SHIFT / 4 of each repacked word -> two 16-bit weights (element 2i low, 2i + 1 high), each
        # ((MAGIC + u) - (MAGIC + zero)) exact, then times the group scale rounded once; z2 and s2 packed pairs
        if BF16:
            return gl.inline_asm_elementwise(
                f"{{.reg .b32 t, one, nz; mov.b32 one, 0x3f803f80; mov.b32 nz, 0x80008000; shr.u32 t, $1, {SHIFT}; "
                "lop3.b32 t, t, 0x000f000f, 0x43004300, 0xea; fma.rn.bf16x2 t, t, one, $2; "
                "fma.rn.bf16x2 $0, t, $3, nz;}", "=r,r,r,r", [words, z2, s2], dtype=gl.int32, is_pure=True, pack=1)
        return gl.inline_asm_elementwise(
            f"{{.reg .b32 t, one, nz; mov.b32 one, 0x3c003c00; mov.b32 nz, 0x80008000; shr.u32 t, $1, {SHIFT}; "
            "lop3.b32 t, t, 0x000f000f, 0x64006400, 0xea; fma.rn.f16x2 t, t, one, $2; "
            "fma.rn.f16x2 $0, t, $3, nz;}", "=r,r,r,r", [words, z2, s2], dtype=gl.int32, is_pure=True, pack=1)

    @gluon.jit
    def _halves(v, DT: gl.constexpr):
        # int32 [R, W, ...] of packed 16-bit pairs -> [R, W, ..., 2] (low, high)
        lo = v.to(gl.int16).to(DT, bitcast=True)
        hi = (v >> 16).to(gl.int16).to(DT, bitcast=True)
        return gl.join(lo, hi)

    @gluon.jit
    def _packed(v, DT: gl.constexpr):
        # 16-bit floats [R] (any dtype DT) -> int32 [R] holding the value in both halves
        b = v.to(DT).to(gl.int16, bitcast=True).to(gl.int32) & 0xFFFF
        return b | (b << 16)

    @gluon.jit
    def _dequant(words, scale, zero, DT: gl.constexpr, BF16: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr):
        # a K step's repacked words [BN, BK / 8] int32, its rows' group scales [BN] (any float dtype) and MAGIC + zero
        # code [BN] fp32 -> the 16-bit weight tile [BN, BK]
        z2 = gl.expand_dims(_packed(-zero, DT), 1)
        s2 = gl.expand_dims(_packed(scale, DT), 1)
        p01 = gl.join(_pair(words, z2, s2, 0, BF16), _pair(words, z2, s2, 4, BF16))
        p23 = gl.join(_pair(words, z2, s2, 8, BF16), _pair(words, z2, s2, 12, BF16))
        w = _halves(gl.join(p01, p23), DT)  # [BN, BW, i % 2, i // 2, lohi]; k - 8 word = 4(i//2) + 2(i%2) + lohi
        return gl.reshape(gl.permute(w, (0, 1, 3, 2, 4)), [BN, BK])

    @gluon.jit
    def _program_tile(K, STEPS_PER_SPLIT, TOK: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr):
        # this program's token tile, weight tile and K split: (pid_m, pid_n, pid_k, off_m, off_n, its first K step,
        # its step count >= 1: split_count leaves no split empty). The token tiles of one weight tile run next to
        # each other, so the weight is read once
        pid_m = gl.program_id(0)
        pid_n = gl.program_id(1)
        pid_k = gl.program_id(2)
        first = pid_k * STEPS_PER_SPLIT
        return pid_m, pid_n, pid_k, pid_m * TOK, pid_n * BN, first, gl.minimum(first + STEPS_PER_SPLIT, K // BK) - first

    @gluon.jit
    def _stage_operands(w_s, s_s, z_s, st, wl: gl.constexpr, rl: gl.constexpr, HAS_ZP: gl.constexpr,
                        MAGIC: gl.constexpr):
        # ring stage st's words [BN, BW] int32 in layout wl, its rows' group scales [BN] in their stored dtype and
        # MAGIC + zero code [BN] fp32 in rl (the scale and zero rows are unswizzled: read straight into rl)
        BN: gl.constexpr = w_s.type.shape[1]
        words = w_s.index(st).load(wl)
        scale = s_s.index(st).reshape([BN]).load(rl)
        if HAS_ZP:
            zero = z_s.index(st).reshape([BN]).load(rl).to(gl.float32) + MAGIC
        else:
            zero = gl.full([BN], MAGIC + 8.0, gl.float32, layout=rl)
        return words, scale, zero

    @gluon.jit
    def _epilogue(acc, out_ptr, ws_ptr, cnt_ptr, M, N, stride_om, off_m, off_n, pid_m, pid_n, pid_k,
                  SPLIT: gl.constexpr, mma: gl.constexpr, num_warps: gl.constexpr):
        # acc [BN, TOK] fp32 in the MMA layout -> out^T's tile: stored, or (SPLIT > 1) this split's partial to the
        # workspace, and the last split of the tile to arrive sums the partials in split order (the protocol of
        # splitk.store_or_reduce, written again here: that function builds its offsets with layout-less tl.arange)
        BN: gl.constexpr = acc.type.shape[0]
        TOK: gl.constexpr = acc.type.shape[1]
        DT: gl.constexpr = out_ptr.dtype.element_ty
        if SPLIT == 1:
            offs_n = off_n + gl.arange(0, BN, layout=gl.SliceLayout(1, mma))
            offs_m = off_m + gl.arange(0, TOK, layout=gl.SliceLayout(0, mma))
            gl.store(out_ptr + gl.expand_dims(offs_m, 0) * stride_om + gl.expand_dims(offs_n, 1), acc.to(DT),
                     mask=gl.expand_dims(offs_n < N, 1) & gl.expand_dims(offs_m < M, 0))
        else:  # in a layout of 4 consecutive tokens per thread (the MMA layout's pointers cost 2 registers an element)
            TC: gl.constexpr = 32 if TOK >= 128 else TOK // 4
            el: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 4], threads_per_warp=[32 // TC, TC],
                                                warps_per_cta=[num_warps, 1], order=[1, 0])
            part = gl.convert_layout(acc, el)
            rows = gl.arange(0, BN, layout=gl.SliceLayout(1, el))
            cols = gl.arange(0, TOK, layout=gl.SliceLayout(0, el))
            tile = gl.expand_dims(rows, 1) * TOK + gl.expand_dims(cols, 0)
            tile_id = pid_n * gl.num_programs(0) + pid_m
            base = ws_ptr + tile_id.to(gl.int64) * (SPLIT * BN * TOK)
            gl.store(base + pid_k * (BN * TOK) + tile, part)
            _cta_barrier()
            arrived = gl.atomic_add(cnt_ptr + tile_id, 1, sem="acq_rel", scope="gpu")
            if arrived == SPLIT - 1:
                total = gl.zeros([BN, TOK], gl.float32, layout=el)
                for s in range(SPLIT):
                    total += gl.load(base + s * (BN * TOK) + tile, cache_modifier=".cg")
                gl.store(out_ptr + gl.expand_dims(off_m + cols, 0) * stride_om + gl.expand_dims(off_n + rows, 1),
                         total.to(DT), mask=gl.expand_dims(off_n + rows < N, 1) & gl.expand_dims(off_m + cols < M, 0))
                gl.atomic_xchg(cnt_ptr + tile_id, 0, sem="relaxed", scope="gpu")

    @gluon.jit
    def _issue(x_desc, w_desc, s_desc, z_desc, bars, x_s, w_s, s_s, z_s, i, first, off_m, off_n, G,
               HAS_ZP: gl.constexpr, STAGES: gl.constexpr, BK: gl.constexpr):
        # TMA of the split's K step i (step first + i of the whole K) into ring stage i % STAGES, counted on that
        # stage's barrier. G, the group size, is a constexpr of every kernel here: k0 // G compiles to a shift
        st = i % STAGES
        bar = bars.index(st)
        NBYTES: gl.constexpr = (x_desc.block_type.nbytes + w_desc.block_type.nbytes + s_desc.block_type.nbytes
                                + HAS_ZP * z_desc.block_type.nbytes)
        mbarrier.expect(bar, NBYTES)
        k0 = (first + i) * BK
        _tma_load(w_desc, [off_n, k0 // 8], bar, w_s.index(st))
        _tma_load(s_desc, [k0 // G, off_n], bar, s_s.index(st))
        if HAS_ZP:
            _tma_load(z_desc, [k0 // G, off_n], bar, z_s.index(st))
        _tma_load(x_desc, [off_m, k0], bar, x_s.index(st))

    @gluon.jit
    def _step(acc, i, x_desc, w_desc, s_desc, z_desc, bars, x_s, w_s, s_s, z_s, a_s, first, n_steps, off_m, off_n, G,
              wl: gl.constexpr, rl: gl.constexpr, HAS_ZP: gl.constexpr, STAGES: gl.constexpr, BK: gl.constexpr,
              BN: gl.constexpr, DT: gl.constexpr, BF16: gl.constexpr, MAGIC: gl.constexpr):
        # K step i: wait for its TMA, dequantize its words into a shared A buffer, issue its wgmma, wait for step
        # i - 1's, and refill the ring stage that step i - 1 read
        st = i % STAGES
        mbarrier.wait(bars.index(st), (i // STAGES) & 1)
        words, scale, zero = _stage_operands(w_s, s_s, z_s, st, wl, rl, HAS_ZP, MAGIC)
        buf = a_s.index(i % 2)  # step i - 2's wgmma, its last reader, finished at step i - 1's wait
        buf.store(_dequant(words, scale, zero, DT, BF16, BN, BK))
        fence_async_shared()
        acc = warpgroup_mma(buf, x_s.index(st).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
        nxt = i - 1 + STAGES  # step i - 1's wgmma is done: its ring stage takes step i - 1 + STAGES
        if (i > 0) & (nxt < n_steps):
            _issue(x_desc, w_desc, s_desc, z_desc, bars, x_s, w_s, s_s, z_s, nxt, first, off_m, off_n, G, HAS_ZP,
                   STAGES, BK)
        return acc

    @gluon.jit
    def _w4a16_wgmma_kernel(x_desc, w_desc, s_desc, z_desc, out_ptr, ws_ptr, cnt_ptr, M, N, K, G: gl.constexpr,
                            stride_om, STEPS_PER_SPLIT, HAS_ZP: gl.constexpr, SPLIT: gl.constexpr,
                            STAGES: gl.constexpr, num_warps: gl.constexpr):
        BN: gl.constexpr = w_desc.block_type.shape[0]
        BW: gl.constexpr = w_desc.block_type.shape[1]  # words per weight row per step
        BK: gl.constexpr = 8 * BW
        TOK: gl.constexpr = x_desc.block_type.shape[0]
        DT: gl.constexpr = x_desc.dtype
        BF16: gl.constexpr = DT == gl.bfloat16
        MAGIC: gl.constexpr = 128.0 if BF16 else 1024.0

        pid_m, pid_n, pid_k, off_m, off_n, first, n_steps = _program_tile(K, STEPS_PER_SPLIT, TOK, BN, BK)

        # acc [BN, TOK] = W tile @ x tile^T; one m64nTOKk16 wgmma per warpgroup per 16 of K
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                      instr_shape=[16, TOK, 16])
        # the words as loaded from shared memory: 4 lanes along a row's BW words, 8 rows per warp
        wl: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, BW // 4], threads_per_warp=[8, 4],
                                            warps_per_cta=[num_warps, 1], order=[1, 0])
        rl: gl.constexpr = gl.SliceLayout(1, wl)
        a_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BN, BK], DT)

        x_s = gl.allocate_shared_memory(DT, [STAGES, TOK, BK], x_desc.layout)
        w_s = gl.allocate_shared_memory(gl.int32, [STAGES, BN, BW], w_desc.layout)
        s_s = gl.allocate_shared_memory(s_desc.dtype, [STAGES, 1, BN], s_desc.layout)  # 16- or 32-bit, as stored
        z_s = gl.allocate_shared_memory(z_desc.dtype, [STAGES, 1, BN], z_desc.layout)  # unused where symmetric
        a_s = gl.allocate_shared_memory(DT, [2, BN, BK], a_layout)
        bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(bars.index(i), count=1)
        for i in gl.static_range(STAGES):  # prologue: the first STAGES steps in flight
            if i < n_steps:
                _issue(x_desc, w_desc, s_desc, z_desc, bars, x_s, w_s, s_s, z_s, i, first, off_m, off_n, G,
                       HAS_ZP, STAGES, BK)

        # step 0 peeled off the loop: on no path is the accumulator defined or read by anything but the wgmmas
        # between a wgmma and its wait (ptxas serializes every wgmma otherwise: C7514/C7515)
        acc = _step(gl.zeros([BN, TOK], gl.float32, layout=mma), 0, x_desc, w_desc, s_desc, z_desc, bars, x_s, w_s,
                    s_s, z_s, a_s, first, n_steps, off_m, off_n, G, wl, rl, HAS_ZP, STAGES, BK, BN, DT, BF16, MAGIC)
        for i in range(1, n_steps):
            acc = _step(acc, i, x_desc, w_desc, s_desc, z_desc, bars, x_s, w_s, s_s, z_s, a_s, first, n_steps, off_m,
                        off_n, G, wl, rl, HAS_ZP, STAGES, BK, BN, DT, BF16, MAGIC)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        for i in gl.static_range(STAGES):
            mbarrier.invalidate(bars.index(i))

        _epilogue(acc, out_ptr, ws_ptr, cnt_ptr, M, N, stride_om, off_m, off_n, pid_m, pid_n, pid_k, SPLIT, mma,
                  num_warps)


    @gluon.jit
    def _dequant_regs(w_s, s_s, z_s, st, L3: gl.constexpr, al: gl.constexpr, HAS_ZP: gl.constexpr, DT: gl.constexpr,
                      BF16: gl.constexpr, MAGIC: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr):
        # ring stage st's words -> the 16-bit weight tile [BN, BK] in the wgmma's register A layout `al`, with no data
        # movement: L3 places int32 [BN, BW, 4] so that lane q of a row's quad holds nibble pair q of each word (the
        # operand's k = 8 * word + 2 * q + half), and its words come from shared memory straight into those lanes
        wl: gl.constexpr = gl.SliceLayout(2, L3)
        rl: gl.constexpr = gl.SliceLayout(1, wl)
        words, scale, zero = _stage_operands(w_s, s_s, z_s, st, wl, rl, HAS_ZP, MAGIC)  # a word in its quad's 4 lanes
        z2 = gl.expand_dims(gl.expand_dims(_packed(-zero, DT), 1), 2)
        s2 = gl.expand_dims(gl.expand_dims(_packed(scale, DT), 1), 2)
        q = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(0, L3)))
        pairs = _pair(gl.expand_dims(words, 2) >> gl.expand_dims(gl.expand_dims(4 * q, 0), 0), z2, s2, 0, BF16)
        w = gl.reshape(_halves(pairs, DT), [BN, BK])  # [BN, BW, 4, 2] -> k = 8 * word + 2 * q + half
        return gl.convert_layout(w, al, assert_trivial=True)

    @gluon.jit
    def _step_regs(acc, a_prev, i, x_desc, w_desc, s_desc, z_desc, bars, empty, x_s, w_s, s_s, z_s, first, n_steps,
                   off_m, off_n, G, L3: gl.constexpr, al: gl.constexpr, HAS_ZP: gl.constexpr, STAGES: gl.constexpr,
                   LOADER: gl.constexpr):
        # K step i of the register forms: wait for its TMA, dequantize into registers, issue its wgmma, wait for step
        # i - 1's (whose operand, a_prev, stays live to here), then give step i - 1's ring stage back once every warp
        # is past that wait: refilled here with step i - 1 + STAGES, or (LOADER) handed to the loader warp by one
        # thread's arrive (the barrier is then a named one over these warps). Returns (acc, this step's operand)
        BN: gl.constexpr = w_desc.block_type.shape[0]
        BK: gl.constexpr = 8 * w_desc.block_type.shape[1]
        DT: gl.constexpr = x_desc.dtype
        BF16: gl.constexpr = DT == gl.bfloat16
        st = i % STAGES
        mbarrier.wait(bars.index(st), (i // STAGES) & 1)
        a = _dequant_regs(w_s, s_s, z_s, st, L3, al, HAS_ZP, DT, BF16, 128.0 if BF16 else 1024.0, BN, BK)
        acc = warpgroup_mma(a, x_s.index(st).permute((1, 0)), acc, is_async=True)
        acc, a_prev = warpgroup_mma_wait(num_outstanding=1, deps=(acc, a_prev))
        if LOADER:
            if i > 0:
                fence_async_shared()  # this step's reads of the stage (generic proxy) before the TMA that refills it
                _cta_barrier()
                mbarrier.arrive(empty.index((i - 1) % STAGES), count=1)
        else:
            if (i > 0) & (i - 1 + STAGES < n_steps):
                fence_async_shared()
                _cta_barrier()
                _issue(x_desc, w_desc, s_desc, z_desc, bars, x_s, w_s, s_s, z_s, i - 1 + STAGES, first, off_m, off_n,
                       G, HAS_ZP, STAGES, BK)
        return acc, a

    @gluon.jit
    def _regs_loop(x_desc, w_desc, s_desc, z_desc, bars, empty, x_s, w_s, s_s, z_s, first, n_steps, off_m, off_n, G,
                   L3: gl.constexpr, mma: gl.constexpr, HAS_ZP: gl.constexpr, STAGES: gl.constexpr,
                   LOADER: gl.constexpr):
        # the register forms' K loop: step 0 peeled (the accumulator's first write is a wgmma's), then steps in pairs,
        # a_odd holding the operand of the odd-numbered step and a_even the even one's, so the step being dequantized
        # never writes the registers of the wgmma still in flight. A tuple: warp_specialize returns the default
        # partition's results so in Triton 3.6
        BN: gl.constexpr = w_desc.block_type.shape[0]
        BK: gl.constexpr = 8 * w_desc.block_type.shape[1]
        TOK: gl.constexpr = x_desc.block_type.shape[0]
        al: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)  # the register A operand
        a_odd = gl.zeros([BN, BK], x_desc.dtype, layout=al)
        acc, a_even = _step_regs(gl.zeros([BN, TOK], gl.float32, layout=mma), a_odd, 0, x_desc, w_desc, s_desc, z_desc,
                                 bars, empty, x_s, w_s, s_s, z_s, first, n_steps, off_m, off_n, G, L3, al, HAS_ZP,
                                 STAGES, LOADER)
        for i in range(1, n_steps - 1, 2):
            acc, a_odd = _step_regs(acc, a_even, i, x_desc, w_desc, s_desc, z_desc, bars, empty, x_s, w_s, s_s, z_s,
                                    first, n_steps, off_m, off_n, G, L3, al, HAS_ZP, STAGES, LOADER)
            acc, a_even = _step_regs(acc, a_odd, i + 1, x_desc, w_desc, s_desc, z_desc, bars, empty, x_s, w_s, s_s,
                                     z_s, first, n_steps, off_m, off_n, G, L3, al, HAS_ZP, STAGES, LOADER)
        if n_steps % 2 == 0:  # an even count leaves one odd-numbered step
            acc, a_odd = _step_regs(acc, a_even, n_steps - 1, x_desc, w_desc, s_desc, z_desc, bars, empty, x_s, w_s,
                                    s_s, z_s, first, n_steps, off_m, off_n, G, L3, al, HAS_ZP, STAGES, LOADER)
            acc, a_odd = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a_odd))
        else:
            acc, a_even = warpgroup_mma_wait(num_outstanding=0, deps=(acc, a_even))
        return (acc,)

    @gluon.jit
    def _loader_partition(x_desc, w_desc, s_desc, z_desc, bars, empty, x_s, w_s, s_s, z_s, first, n_steps, off_m,
                          off_n, G, HAS_ZP: gl.constexpr, STAGES: gl.constexpr):
        # form 2's TMA warp: step i into ring stage i % STAGES once its last reader, step i - STAGES, has handed it
        # back. `empty` is not pre-arrived: a fresh mbarrier counts the phase before its first (parity 1) as
        # complete, so waiting with the inverted parity lets the first STAGES steps through at once
        for i in range(n_steps):
            mbarrier.wait(empty.index(i % STAGES), ((i // STAGES) & 1) ^ 1)
            _issue(x_desc, w_desc, s_desc, z_desc, bars, x_s, w_s, s_s, z_s, i, first, off_m, off_n, G, HAS_ZP,
                   STAGES, 8 * w_desc.block_type.shape[1])

    @gluon.jit
    def _w4a16_wgmma_regs_kernel(x_desc, w_desc, s_desc, z_desc, out_ptr, ws_ptr, cnt_ptr, M, N, K, G: gl.constexpr,
                                 stride_om, STEPS_PER_SPLIT, HAS_ZP: gl.constexpr, SPLIT: gl.constexpr,
                                 STAGES: gl.constexpr, L3: gl.constexpr, LOADER: gl.constexpr,
                                 num_warps: gl.constexpr):
        # forms 1 (LOADER false: these warps refill the ring) and 2 (a loader warp of its own does)
        BN: gl.constexpr = w_desc.block_type.shape[0]
        BW: gl.constexpr = w_desc.block_type.shape[1]
        TOK: gl.constexpr = x_desc.block_type.shape[0]
        DT: gl.constexpr = x_desc.dtype

        pid_m, pid_n, pid_k, off_m, off_n, first, n_steps = _program_tile(K, STEPS_PER_SPLIT, TOK, BN, 8 * BW)
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                      instr_shape=[16, TOK, 16])
        # one ring (a step's x, words, scales and zeros per stage), its TMA bytes under one expect per stage's
        # `bars`; `empty` (form 2) counts one consumer thread's arrive
        x_s = gl.allocate_shared_memory(DT, [STAGES, TOK, 8 * BW], x_desc.layout)
        w_s = gl.allocate_shared_memory(gl.int32, [STAGES, BN, BW], w_desc.layout)
        s_s = gl.allocate_shared_memory(s_desc.dtype, [STAGES, 1, BN], s_desc.layout)
        z_s = gl.allocate_shared_memory(z_desc.dtype, [STAGES, 1, BN], z_desc.layout)
        bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(bars.index(i), count=1)
            if LOADER:  # form 1 never uses `empty`
                mbarrier.init(empty.index(i), count=1)
        if LOADER:
            acc = gl.warp_specialize([
                (_regs_loop, (x_desc, w_desc, s_desc, z_desc, bars, empty, x_s, w_s, s_s, z_s, first, n_steps, off_m,
                              off_n, G, L3, mma, HAS_ZP, STAGES, LOADER)),
                (_loader_partition, (x_desc, w_desc, s_desc, z_desc, bars, empty, x_s, w_s, s_s, z_s, first, n_steps,
                                     off_m, off_n, G, HAS_ZP, STAGES)),
            ], [1], [_LOADER_REGS])[0]
        else:
            for i in gl.static_range(STAGES):  # prologue: the first STAGES steps in flight
                if i < n_steps:
                    _issue(x_desc, w_desc, s_desc, z_desc, bars, x_s, w_s, s_s, z_s, i, first, off_m, off_n, G,
                           HAS_ZP, STAGES, 8 * BW)
            acc = _regs_loop(x_desc, w_desc, s_desc, z_desc, bars, empty, x_s, w_s, s_s, z_s, first, n_steps, off_m,
                             off_n, G, L3, mma, HAS_ZP, STAGES, LOADER)[0]
        for i in gl.static_range(STAGES):
            mbarrier.invalidate(bars.index(i))
            if LOADER:
                mbarrier.invalidate(empty.index(i))

        _epilogue(acc, out_ptr, ws_ptr, cnt_ptr, M, N, stride_om, off_m, off_n, pid_m, pid_n, pid_k, SPLIT, mma,
                  num_warps)


def regs_layout(bn: int, warps: int):
    """The register form's int32 [BN, BW = 8, 4] layout (a Gluon DistributedLinearLayout): lanes 0-1 of a quad take
    nibble pair q, lanes 2-4 rows 0-7, a register row + 8, registers the 8 words of a step, warps 16 rows each; the
    wgmma's A operand layout for BLOCK_N = 16 * warps and a 64-wide K step, with K split as (word, q, half)."""
    if bn != 16 * warps or warps not in (4, 8):
        raise ValueError(f"the register form needs BLOCK_N = 16 * warps with 4 or 8 warps, got {bn}, {warps}")
    return gl.DistributedLinearLayout(
        reg_bases=[[8, 0, 0], [0, 1, 0], [0, 2, 0], [0, 4, 0]],
        lane_bases=[[0, 0, 1], [0, 0, 2], [1, 0, 0], [2, 0, 0], [4, 0, 0]],
        warp_bases=[[16 << i, 0, 0] for i in range(warps.bit_length() - 1)], block_bases=[], shape=[bn, 8, 4])


def supported(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group_size: int, zeros=None) -> bool:
    """Whether this kernel can take the call: Gluon present, an sm_90 device, and the shape limits above."""
    if not HAVE_GLUON or x.device.type != "cuda" or device_capability(x.device) != (9, 0):
        return False
    k = qweight.shape[1] * 8
    return (x.dtype in (torch.bfloat16, torch.float16) and k % BLOCK_K == 0 and group_size >= BLOCK_K
            and group_size % BLOCK_K == 0 and qweight.shape[0] % 8 == 0 and x.stride(-1) == 1
            and x.data_ptr() % 16 == 0 and (x.stride(0) * 2) % 16 == 0
            and scales.dtype in (torch.float32, torch.bfloat16, torch.float16) and scales.is_contiguous()
            and (zeros is None or (zeros.dtype == scales.dtype and zeros.is_contiguous())))


def _desc(t: torch.Tensor, block: list[int]):
    if block[0] == 1:  # a row of group scales or zeros (16- or 32-bit): unswizzled, read by the kernel as a vector
        layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8 * t.element_size(), rank=2)
    else:
        layout = gl.NVMMASharedLayout.get_default_for(block, {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16,
                                                              torch.int32: gl.int32}[t.dtype])
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, layout)


def w4a16_wgmma(x, qweight, scales, group_size, zeros=None, config=None) -> torch.Tensor:
    """x [M, K] 16-bit -> [M, N] (the repacked layout of `w4a16_layout`); config = (BLOCK_N, num_warps, STAGES,
    waves, tokens[, form]) as CONFIGS. Raises where `supported` says no."""
    check_repacked(x, qweight, scales, group_size, zeros, sixteen_bit=True)
    if not supported(x, qweight, scales, group_size, zeros):
        raise ValueError("w4a16_wgmma needs Gluon, an sm_90 GPU, 16-bit x with 16-byte aligned rows, K a multiple "
                         f"of {BLOCK_K}, group size a multiple of {BLOCK_K} and N a multiple of 8; got x "
                         f"{tuple(x.shape)} {x.dtype} on {x.device}, group {group_size}, N {qweight.shape[0]}")
    config = tuple(config or DEFAULT_CONFIG)
    if len(config) not in (5, 6):
        raise ValueError(f"bad w4a16_wgmma config {config}: (BLOCK_N, num_warps, STAGES, waves, tokens[, form])")
    bn, warps, stages, waves, tokens, form = config + (0,) * (6 - len(config))
    if bn % (16 * warps) or warps % 4 or tokens not in (16, 32, 64, 128, 256) or form not in (0, 1, 2) or (
            form and bn != 16 * warps):
        raise ValueError(f"bad w4a16_wgmma config {config}: BLOCK_N a multiple of 16 * warps (equal to it in the "
                         "register forms), warps a multiple of 4, tokens a power of two in 16..256, form 0, 1 or 2")
    if form == 2 and not HAVE_WS:
        raise ValueError(f"w4a16_wgmma config {config}: the loader form needs Gluon's warp specialization")
    if form:
        return launch(_w4a16_wgmma_regs_kernel, x, qweight, scales, group_size, zeros, bn, tokens, waves,
                      STAGES=stages, L3=regs_layout(bn, warps), LOADER=form == 2, num_warps=warps)
    return launch(_w4a16_wgmma_kernel, x, qweight, scales, group_size, zeros, bn, tokens, waves, STAGES=stages,
                  num_warps=warps)


def launch(kernel, x, qweight, scales, group_size, zeros, bn, tokens, waves, **constexprs) -> torch.Tensor:
    """Runs a wgmma tile kernel of this file's signature (this one, or `w4a16_wgmma_ws`'s): token tiles of up to
    `tokens`, BLOCK_N `bn`, split-K for about `waves` programs per SM, descriptors for x, the words, scales and zeros;
    `constexprs` are the kernel's own (stages, warps, ...)."""
    m, k = x.shape
    n = qweight.shape[0]
    tok = min(tokens, max(16, triton.next_power_of_2(m)))
    tiles = triton.cdiv(m, tok)
    split, per_split = split_count(k // BLOCK_K, tiles * triton.cdiv(n, bn), num_sms(x.device), waves)
    ws, cnt = splitk_buffers(x.device, tiles * triton.cdiv(n, bn), split, bn * tok)
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    s_desc = _desc(scales, [1, bn])
    kernel[(tiles, triton.cdiv(n, bn), split)](
        _desc(x, [tok, BLOCK_K]), _desc(qweight, [bn, BLOCK_K // 8]), s_desc,
        _desc(zeros, [1, bn]) if zeros is not None else s_desc, out, ws, cnt, m, n, k, group_size, out.stride(0),
        per_split, HAS_ZP=zeros is not None, SPLIT=split, **constexprs)
    return out
