"""GPU compiles on the CPU: this folder's tests run with TRITON_INTERPRET=1, which replaces @triton.jit, so a script
that compiles kernels for sm_90 (PTX through the ptxas that ships with Triton, no GPU needed) runs in a fresh Python
without it."""
import os
import subprocess
import sys
from pathlib import Path


def run_without_interpreter(script: str) -> str:
    """Runs `script` with TRITON_INTERPRET unset; fails the calling test with its stderr; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-P", "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


# The head of a script that compiles Gluon kernels for sm_90 through Gluon's own launcher path (`kernel.warmup(...,
# grid=(1,))`) on a machine without a GPU: a stand-in driver that reports an sm_90 target, and `assemble`, which runs
# ptxas on the PTX and fails where it does not assemble or serializes the wgmmas (C7514/C7515: ptxas does so when
# anything but a wgmma touches the accumulator between a wgmma and its wait).
GLUON_SM90 = f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n" + """
import re, subprocess, torch, triton
from sass_check import register_a_races
from triton.backends.compiler import GPUTarget
from triton.runtime import driver

class Sm90:  # the active driver, as far as compiling goes: an sm_90 target, device 0, the null stream
    def get_current_target(self): return GPUTarget("cuda", 90, 32)
    def get_current_device(self): return 0
    def get_current_stream(self, device=None): return 0
    def get_active_torch_device(self): return torch.device("cpu")
driver.set_active(Sm90())

def assemble(ptx):
    # ptxas -v for sm_90a -> its stderr (registers, spills); PTX's version set to the newest this ptxas reads
    assert ".target sm_90a" in ptx and "wgmma.mma_async" in ptx and "cp.async.bulk.tensor" in ptx
    with open("k.ptx", "w") as f:
        f.write(re.sub(r"\\.version \\d+\\.\\d+", ".version 8.7", ptx))
    r = subprocess.run([triton.knobs.nvidia.ptxas.path, "-arch=sm_90a", "-v", "k.ptx", "-o", "k.cubin"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "C7514" not in r.stderr and "C7515" not in r.stderr and "serialized" not in r.stderr, r.stderr[-2000:]
    return r.stderr

def compile_int4_tile(kernel, m, G, hz, dt, split, sdt, bn, tokens, a_in_registers=False, **constexprs):
    # one of kvant.kernels.w4a16_wgmma's INT4 tile kernels (its signature), compiled for N = 1024, K = 2048, m rows,
    # group G, zeros if hz, x dtype dt, scales in sdt (None: dt), `split` K splits, and assembled: its wgmmas one
    # outstanding across the K loop, not serialized; fp32 scales held as fp32; shared memory within an H100's
    # (227 KB a block, the epilogue's scratch included) -> (compiled kernel, ptxas -v stderr, nvdisasm SASS)
    from kvant.kernels.w4a16_wgmma import BLOCK_K, _desc
    n, k = 1024, 2048
    x = torch.zeros(m, k, dtype=dt); qw = torch.zeros(n, k // 8, dtype=torch.int32)
    s = torch.zeros(k // G, n, dtype=sdt or dt); z = torch.zeros(k // G, n, dtype=sdt or dt)
    tok = min(tokens, max(16, triton.next_power_of_2(m)))
    sd = _desc(s, [1, bn])
    out = torch.zeros(m, n, dtype=dt); ws = torch.zeros(16); cnt = torch.zeros(16, dtype=torch.int32)
    kern = kernel.warmup(_desc(x, [tok, BLOCK_K]), _desc(qw, [bn, BLOCK_K // 8]), sd, _desc(z, [1, bn]) if hz else sd,
                         out, ws, cnt, m, n, k, G, out.stride(0), 4, HAS_ZP=hz, SPLIT=split, grid=(1,), **constexprs)
    ttgir = kern.asm["ttgir"]
    assert "1" in re.findall(r"warp_group_dot_wait.*?pendings = (\\d+)", ttgir), "the wgmmas wait for each other"
    if sdt is torch.float32:  # the scale row is copied and read as 32-bit words
        assert "memdesc<%dx1x%dxf32" % (constexprs["STAGES"], bn) in ttgir, "fp32 scales not held as fp32"
    assert kern.metadata.shared <= 227 * 1024, kern.metadata.shared
    stderr = assemble(kern.asm["ptx"])
    # every HGMMA reads A from shared memory, or (a_in_registers) every one from registers, none of which is written
    # before the DEPBAR that retires its HGMMA (sass_check: the race of the first register-operand form)
    nvdisasm = triton.knobs.nvidia.ptxas.path.rsplit("/", 1)[0] + "/nvdisasm"
    sass = subprocess.run([nvdisasm, "-c", "k.cubin"], capture_output=True, text=True, check=True).stdout
    hgmma = re.findall(r"HGMMA\\.\\S+ R\\d+, (\\S+)", sass)
    assert hgmma and all(a.startswith("R" if a_in_registers else "gdesc") for a in hgmma), hgmma
    groups, races = register_a_races(sass)
    assert bool(groups) == a_in_registers and not races, races[:5]
    if a_in_registers:  # the dequantized tile never passes through shared memory on its way to the wgmma
        loop = sass[sass.index("HGMMA"):sass.rindex("HGMMA")]
        assert "STS" not in loop and "LDSM.16.M88" not in loop, "the register operand went through shared memory"
    return kern, stderr, sass
"""
