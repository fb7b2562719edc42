"""The warp-specialized Gluon INT4 tile (kvant.kernels.w4a16_wgmma_ws) compiled for sm_90 on the CPU and assembled by
ptxas.

Gluon kernels do not run under TRITON_INTERPRET, so this is CI's check of the kernel (the GPU tests in
test_gpu_wgmma_ws.py run it on a Hopper card): every config it offers must compile into a warp-specialized kernel
whose wgmmas stay asynchronous (one outstanding across the K loop, `pendings = 1`), ptxas must not serialize them
(C7514/C7515: it does so when anything but a wgmma reads or writes the accumulator between a wgmma and its wait), and
its shared memory must fit an H100 (227 KB a block, the epilogue's layout-conversion scratch included). The compile
runs through Gluon's own launcher path with a stand-in driver that reports an sm_90 target, since this machine has no
GPU.
"""
import pytest

from .compile_check import run_without_interpreter

SCRIPT = """
import re, subprocess, torch, triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver

class Sm90:  # the active driver, as far as compiling goes: an sm_90 target, device 0, the null stream
    def get_current_target(self): return GPUTarget("cuda", 90, 32)
    def get_current_device(self): return 0
    def get_current_stream(self, device=None): return 0
    def get_active_torch_device(self): return torch.device("cpu")
driver.set_active(Sm90())

from kvant.kernels import w4a16_wgmma_ws as g
ptxas = triton.knobs.nvidia.ptxas.path if hasattr(triton, "knobs") else None
SMEM = 227 * 1024  # an H100's (and H200's) shared memory per block
# (config, rows, group, asymmetric, x dtype, split, scale dtype or None for x's)
cases = [(cf, 256, 128, False, torch.bfloat16, 1, None) for cf in g.CONFIGS]
cases += [((128, 8, 4, 2, 1, 64), 200, 64, True, torch.float16, 3, None),  # asymmetric fp16, split-K
          ((64, 4, 4, 2, 2, 64), 16, 256, False, torch.bfloat16, 2, None),
          ((128, 8, 3, 2, 1, 256), 256, 128, False, torch.bfloat16, 1, torch.float32),  # the engine's fp32 scales
          ((128, 8, 4, 2, 1, 256), 256, 128, True, torch.bfloat16, 2, torch.float32),  # the largest shared memory
          ((64, 4, 4, 2, 2, 64), 40, 128, True, torch.bfloat16, 2, torch.float32),
          ((128, 8, 3, 3, 8, 256), 130, 256, True, torch.float16, 4, None)]  # as in the GPU test's CUDA graphs
for cf, m, G, hz, dt, split, sdt in cases:
    bn, warps, stages, a_stages, waves, tokens = cf
    n, k = 1024, 2048
    x = torch.zeros(m, k, dtype=dt); qw = torch.zeros(n, k // 8, dtype=torch.int32)
    s = torch.zeros(k // G, n, dtype=sdt or dt); z = torch.zeros(k // G, n, dtype=sdt or dt)
    tok = min(tokens, max(16, triton.next_power_of_2(m)))
    sd = g._desc(s, [1, bn])
    out = torch.zeros(m, n, dtype=dt); ws = torch.zeros(16); cnt = torch.zeros(16, dtype=torch.int32)
    kern = g._w4a16_wgmma_ws_kernel.warmup(
        g._desc(x, [tok, g.BLOCK_K]), g._desc(qw, [bn, g.BLOCK_K // 8]), sd, g._desc(z, [1, bn]) if hz else sd, out,
        ws, cnt, m, n, k, G, out.stride(0), 4, HAS_ZP=hz, SPLIT=split, STAGES=stages, A_STAGES=a_stages,
        num_warps=warps, grid=(1,))
    ttgir = kern.asm["ttgir"]
    assert "ttg.warp_specialize" in ttgir, "no warp-specialized region"
    waits = re.findall(r"warp_group_dot_wait.*?pendings = (\\d+)", ttgir)
    assert "1" in waits, waits
    ptx = kern.asm["ptx"]
    assert ".target sm_90a" in ptx and "wgmma.mma_async" in ptx and "cp.async.bulk.tensor" in ptx
    assert "setmaxnreg" in ptx, "the partitions' register split is missing"
    with open("k.ptx", "w") as f:
        f.write(re.sub(r"\\.version \\d+\\.\\d+", ".version 8.7", ptx))  # the newest PTX this ptxas reads
    r = subprocess.run([ptxas, "-arch=sm_90a", "-v", "k.ptx", "-o", "k.cubin"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "C7514" not in r.stderr and "C7515" not in r.stderr and "serialized" not in r.stderr, r.stderr[-2000:]
    if split == 1:  # no spills; the split-K reduction of a 256-token tile may spill a few words, after the loop
        assert set(re.findall(r"(\\d+) bytes spill", r.stderr)) <= {"0"}, r.stderr[-2000:]
    assert kern.metadata.shared <= SMEM, (cf, kern.metadata.shared)
    if sdt is torch.float32:  # the scale row is copied and read as 32-bit words
        assert "memdesc<%dx1x%dxf32" % (stages, bn) in ttgir, "fp32 scales not held as fp32"
    regs = re.search(r"Used (\\d+) registers", r.stderr)
    print("compiled", cf, m, G, hz, split, "shared", kern.metadata.shared, "regs", regs and regs.group(1))
"""


def test_wgmma_ws_tile_compiles_for_sm90_warp_specialized(tmp_path, monkeypatch):
    from kvant.kernels import w4a16_wgmma_ws

    if not w4a16_wgmma_ws.HAVE_GLUON:
        pytest.skip("this Triton has no Gluon warp specialization")
    monkeypatch.chdir(tmp_path)
    assert run_without_interpreter(SCRIPT).count("compiled") == len(w4a16_wgmma_ws.CONFIGS) + 6


def test_wgmma_ws_tile_refuses_what_it_cannot_run():
    # off an sm_90 GPU (here: the CPU) the call is refused with the reason, and `supported` says no first
    import torch

    from kvant.kernels.int4_pack import pack_int4
    from kvant.kernels.w4a16_layout import repack_w4
    from kvant.kernels.w4a16_wgmma_ws import supported, w4a16_wgmma_ws

    n, k, g = 64, 256, 128
    qweight, scales, _ = repack_w4(pack_int4(torch.randint(-8, 8, (n, k), dtype=torch.int8)),
                                   torch.rand(n, k // g).to(torch.bfloat16), g)
    x = torch.randn(4, k, dtype=torch.bfloat16)
    assert not supported(x, qweight, scales, g)
    with pytest.raises(ValueError, match="sm_90"):
        w4a16_wgmma_ws(x, qweight, scales, g)
