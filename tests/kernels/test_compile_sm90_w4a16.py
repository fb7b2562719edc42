"""The repacked W4A16 kernels (one-row GEMV in both forms, swap-AB and wide tiles with and without split-K) compiled for sm_90 on
the CPU, as tests/kernels/test_compile_sm90.py does for RoPE + KV store: the interpreter this folder runs under does
not lower tl.dot to wgmma nor check register-level types. Subprocess: TRITON_INTERPRET=1 replaces @triton.jit."""
from .compile_check import run_without_interpreter

SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kvant.kernels import w4a16_fast_gemv as g, w4a16_swapab as s

def compile90(fn, names, types, constexprs, warps, stages):
    sig = dict(zip(names, types), **{k: "constexpr" for k in constexprs})
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs)
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages)).asm["ptx"]
    assert ".target sm_90" in ptx and "st.global" in ptx, (fn.__name__, constexprs)
    # programmatic dependent launch: the wait before the first access, then the release of the next kernel
    assert ("griddepcontrol.wait" in ptx and "griddepcontrol.launch_dependents" in ptx) == constexprs["PDL"]
    print("compiled", fn.__name__, constexprs)

ptrs = ["*bf16", "*i32", "*bf16", "*bf16", "*bf16", "*fp32", "*i32"]
names = ["x_ptr", "w_ptr", "s_ptr", "z_ptr", "out_ptr", "ws_ptr", "cnt_ptr", "N", "K", "stride_wn", "TILES_PER_SPLIT"]
for hz, split, pairs, group, pdl in [(False, 1, False, 128, True), (True, 4, False, 32, False), (False, 4, True, 64, False),
                                    (True, 1, True, 128, False)]:
    compile90(g._fast_gemv_kernel, names, ptrs + ["i32"] * 4,
              dict(HAS_ZP=hz, SPLIT=split, PAIRS=pairs, GROUP=group, NG=1024 // group, BLOCK_N=16, PDL=pdl), 4, 3)
names = ["x_ptr", "w_ptr", "s_ptr", "z_ptr", "out_ptr", "ws_ptr", "cnt_ptr", "M", "N", "K", "G", "stride_xm",
         "stride_wn", "stride_om", "TILES_PER_SPLIT"]
for hz, split, bm, bn, pdl, scale_in in [(False, 4, 16, 64, True, False), (True, 2, 64, 64, False, False),
                                         (False, 1, 128, 128, False, False), (True, 2, 128, 128, False, True)]:
    compile90(s._swapab_kernel, names, ptrs + ["i32"] * 8, dict(HAS_ZP=hz, SPLIT=split, BF16=True, UPCAST=False,
              BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128, PDL=pdl, SCALE_IN=scale_in), 4, 3)
for hz, bm, bn, scale_in, warps, pdl in [(False, 64, 128, True, 4, True), (True, 128, 256, False, 8, False)]:  # SPLIT a runtime int
    compile90(s._wide_kernel, names + ["SPLIT"], ptrs + ["i32"] * 9, dict(HAS_ZP=hz, BF16=True, UPCAST=False,
              SCALE_IN=scale_in, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128, PDL=pdl), warps, 3)
"""


def test_repacked_w4a16_kernels_compile_for_sm90():
    assert run_without_interpreter(SCRIPT).count("compiled") == 10
