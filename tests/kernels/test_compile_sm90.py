"""The GPU compiler checks what the Triton interpreter does not (branch-local shapes, return types): compile the
fused RoPE + KV-store kernel for sm_90 on the CPU (PTX through the ptxas that ships with Triton), no GPU needed.
It runs in a subprocess because this folder's tests run with TRITON_INTERPRET=1, which replaces @triton.jit."""
from .compile_check import run_without_interpreter

CASES = [
    (32, 8, False, False, "bf16"),  # Llama-3.1-8B
    (16, 8, True, False, "bf16"),  # Qwen3-0.6B (q/k norm)
    (16, 8, True, True, "bf16"),  # Qwen3 with an FP8 KV cache
    (32, 8, False, True, "bf16"),
    (14, 2, False, False, "fp16"),  # head counts that are not powers of two
]

SCRIPT = """
import sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kvant.kernels import rope_store
names = ["q_ptr", "k_ptr", "v_ptr", "qo_ptr", "kc_ptr", "vc_ptr", "pos_ptr", "cs_ptr", "slot_ptr", "qw_ptr", "kw_ptr",
         "stride_q", "stride_k", "stride_v", "eps", "k_scale", "v_scale", "HQ", "HKV",
         "HALF", "BLOCK_HQ", "BLOCK_HKV", "QK_NORM", "IS_FP8", "EXACT_ROUND"]
for hq, hkv, qk_norm, fp8, dtype in %r:
    cache = "*u8" if fp8 else f"*{dtype}"
    types = [f"*{dtype}"] * 4 + [cache, cache, "*i64", "*fp32", "*i64", f"*{dtype}", f"*{dtype}",
                                 "i64", "i64", "i64", "fp32", "fp32", "fp32", "i32", "i32"] + ["constexpr"] * 6
    constexprs = dict(HALF=64, BLOCK_HQ=triton.next_power_of_2(hq), BLOCK_HKV=triton.next_power_of_2(hkv),
                      QK_NORM=qk_norm, IS_FP8=fp8, EXACT_ROUND=False)
    src = ASTSource(fn=rope_store._rope_store_kernel, signature=dict(zip(names, types)), constexprs=constexprs)
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4)).asm["ptx"]
    assert ".target sm_90" in ptx and "st.global" in ptx, (hq, hkv, qk_norm, fp8, dtype)
    print("compiled", hq, hkv, qk_norm, fp8, dtype)
"""


def test_rope_store_compiles_for_sm90():
    assert run_without_interpreter(SCRIPT % (CASES,)).count("compiled") == len(CASES)


DECODE_CASES = [  # (GROUP, HKV, splits, rope, qk_norm, fp8, dtype, merge3d)
    (4, 8, 33, True, False, False, "bf16", False),  # Llama-3.1-8B at batch 1: fused RoPE + store, in-kernel merge
    (4, 8, 16, True, False, False, "bf16", True),  # the same, every head of the group merged in one tile
    (4, 8, 1, True, False, False, "bf16", False),  # batch 64: one split
    (2, 8, 8, True, True, True, "bf16", True),  # Qwen3-0.6B (q/k norm) with an FP8 KV cache
    (4, 8, 33, False, False, False, "fp16", False),  # q already rotated (the plain decode entry point)
]

DECODE_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kvant.kernels import paged_attention
fn = paged_attention._decode_kernel
names = list(fn.arg_names)
for i, (group, hkv, splits, rope, qk_norm, fp8, dtype, merge3d) in enumerate(%r):
    cache = "*u8" if fp8 else f"*{dtype}"
    types = ([f"*{dtype}"] * 3 + [cache, cache, "*i32", "*i32", "*i64", "*i64", "*fp32", f"*{dtype}", f"*{dtype}",
              f"*{dtype}", "*fp32", "*fp32", "*i32", "fp32", "fp32", "fp32", "fp32"] + ["i64"] * 7)
    constexprs = dict(HKV=hkv, GROUP=group, BLOCK_H=16, D=128, BLOCK_SIZE=16, BLOCK_N=64, NUM_SPLITS=splits,
                      BLOCK_S=triton.next_power_of_2(splits), ROPE=rope, QK_NORM=qk_norm, IS_FP8=fp8, UPCAST=False,
                      EXACT_ROUND=False, MERGE3D=merge3d, BLOCK_G=triton.next_power_of_2(group), PDL=i == 1)
    types += ["constexpr"] * len(constexprs)
    assert len(types) == len(names), (len(types), len(names))
    src = ASTSource(fn=fn, signature=dict(zip(names, types)), constexprs=constexprs)
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, num_stages=2)).asm["ptx"]
    assert ".target sm_90" in ptx and "st.global" in ptx and ("atom" in ptx) == (splits > 1), (group, splits, rope)
    assert ("griddepcontrol.wait" in ptx and "griddepcontrol.launch_dependents" in ptx) == (i == 1)
    print("compiled", group, hkv, splits, rope, qk_norm, fp8, dtype, merge3d)
"""


def test_decode_attention_compiles_for_sm90():
    assert run_without_interpreter(DECODE_SCRIPT % (DECODE_CASES,)).count("compiled") == len(DECODE_CASES)


W8_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kvant.kernels import quant_rows, scaled_gemm, skinny_gemm

def build(fn, types, constexprs, warps):
    names = list(fn.arg_names)
    types = types + ["constexpr"] * len(constexprs)
    assert len(types) == len(names), (fn, len(types), len(names))
    src = ASTSource(fn=fn, signature=dict(zip(names, types)), constexprs=constexprs)
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps)).asm["ptx"]
    # programmatic dependent launch: the wait before the first access, then the release of the next kernel
    assert ("griddepcontrol.wait" in ptx and "griddepcontrol.launch_dependents" in ptx) == constexprs["PDL"]
    return ptx

for w_fp8, wtype in ((True, "*u8"), (False, "*i8")):  # the weight-only 8-bit decode GEMM, split-K reduced in-kernel
    types = ["*bf16", wtype, "*fp32", "*bf16", "*bf16", "*fp32", "*i32"] + ["i32"] * 6 + ["i32", "i32"]
    ptx = build(skinny_gemm._skinny_kernel, types, dict(HAS_BIAS=False, REDUCE=True, UPCAST=False, SILU_MUL=False,
                W_FP8=w_fp8, HAS_SCALE=True, BLOCK_M=16, BLOCK_N=64, BLOCK_K=256, PDL=w_fp8), 4)
    assert "mma" in ptx and "atom" in ptx, w_fp8
    print("compiled skinny", w_fp8)
for is_int, qtype in ((False, "*u8"), (True, "*i8")):  # RMSNorm and SiLU·mul writing per-token FP8 / INT8
    ptx = build(quant_rows._rms_norm_quant_kernel, ["*bf16", "*bf16", "*bf16", qtype, "*fp32", "*bf16", "i32", "fp32"],
                dict(HAS_RESIDUAL=True, QMAX=127.0 if is_int else 448.0, IS_INT=is_int, EXACT_ROUND=False, BLOCK=4096,
                     PDL=is_int), 8)
    assert "st.global" in ptx
    ptx = build(quant_rows._silu_mul_quant_kernel, ["*bf16", qtype, "*fp32", "i32", "i32"],
                dict(QMAX=127.0 if is_int else 448.0, IS_INT=is_int, EXACT_ROUND=False, BLOCK=4096, PDL=not is_int), 8)
    assert "st.global" in ptx
    print("compiled quant", is_int)
for b_fp8, btype, split, pdl in ((True, "*fp8e4nv", 4, True), (False, "*i8", 1, False)):  # the W8A16 GEMM at decode
    types = ["*bf16", btype, "*fp32", "*fp32", "*fp32", "*bf16", "*fp32", "*i32"] + ["i32"] * 7  # sizes
    ptx = build(scaled_gemm._scaled_gemm_kernel, types, dict(A_FP8=False, B_FP8=False, CONVERT_B=True,
                HAS_ROW_SCALE=False, HAS_BIAS=False, INT_ACC=False, SPLIT=split, UPCAST=False, BLOCK_M=16, BLOCK_N=64,
                BLOCK_K=256, GROUP_M=8, PDL=pdl), 4)
    assert "mma" in ptx and ("atom" in ptx) == (split > 1), (b_fp8, split)  # splits reduced in the kernel
    print("compiled w8a16", b_fp8)
for fp8 in (True, False):  # W8A8 at a busy step's tile: both operands go from shared memory into the wgmma
    qtype = "*fp8e4nv" if fp8 else "*i8"
    types = [qtype, qtype, "*fp32", "*fp32", "*fp32", "*bf16", "*fp32", "*i32"] + ["i32"] * 7
    names = list(scaled_gemm._scaled_gemm_kernel.arg_names)
    constexprs = dict(A_FP8=False, B_FP8=False, CONVERT_B=False, HAS_ROW_SCALE=True, HAS_BIAS=False, INT_ACC=not fp8,
                      SPLIT=1, UPCAST=False, BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, PDL=True)
    src = ASTSource(fn=scaled_gemm._scaled_gemm_kernel, signature=dict(zip(names, types + ["constexpr"] * 13)),
                    constexprs=constexprs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=8, num_stages=3))
    assert ("e4m3" if fp8 else ".s8") in k.asm["ptx"] and "wgmma" in k.asm["ptx"], fp8
    assert "ttg.local_load" not in k.asm["ttgir"], fp8
    print("compiled w8a8", fp8)
"""


def test_w8_decode_gemm_and_fused_quant_compile_for_sm90():
    assert run_without_interpreter(W8_SCRIPT).count("compiled") == 8
