"""The Gluon INT4 wgmma tiles (kvant.kernels.w4a16_wgmma, and its warp-specialized form w4a16_wgmma_ws) compiled for
sm_90 on the CPU and assembled by ptxas.

Gluon kernels do not run under TRITON_INTERPRET, so this is CI's check of the kernels (with their torch reference; the
GPU tests in test_gpu.py run them on a Hopper card): each must compile for every config it offers, keep its wgmmas
asynchronous (one outstanding across the K loop, `pendings = 1`), ptxas must not serialize them (C7514/C7515: it does
so when anything but a wgmma reads or writes the accumulator between a wgmma and its wait), and its shared memory must
fit an H100's. The warp-specialized one must also be split into partitions with their own register budgets. The
compiles run through Gluon's own launcher path with a stand-in sm_90 driver (compile_check.GLUON_SM90), since this
machine has no GPU.
"""
import pytest

from .compile_check import GLUON_SM90, run_without_interpreter

SCRIPT = GLUON_SM90 + """
from kvant.kernels import w4a16_wgmma as g
cases = [(cf, 256, 128, False, torch.bfloat16, 1, None) for cf in g.CONFIGS]
cases += [((128, 8, 4, 1, 64), 200, 64, True, torch.float16, 3, None),
          ((64, 4, 4, 2, 64), 16, 256, False, torch.bfloat16, 2, None),
          ((128, 8, 4, 2, 64), 100, 128, True, torch.float16, 2, None),
          ((128, 8, 3, 1, 256), 256, 128, False, torch.bfloat16, 1, torch.float32),  # the engine's fp32 scales
          ((64, 4, 4, 2, 64), 40, 128, True, torch.bfloat16, 2, torch.float32)]
cases += [((128, 8, 4, 1, 64, True), 200, 64, True, torch.float16, 3, None),  # the register form, asymmetric fp16
          ((64, 4, 4, 2, 64, True), 16, 256, False, torch.bfloat16, 2, None),
          ((128, 8, 3, 1, 256, True), 256, 128, True, torch.bfloat16, 1, torch.float32),
          ((128, 8, 4, 1, 128, True), 40, 128, False, torch.bfloat16, 4, torch.float32)]
cases += [((128, 8, 4, 1, 64, 2), 200, 64, True, torch.float16, 3, None),  # the loader form, asymmetric fp16
          ((64, 4, 8, 4, 16, 2), 1, 128, False, torch.bfloat16, 4, torch.float32)] if g.HAVE_WS else []
for cf, m, G, hz, dt, split, sdt in cases:
    bn, warps, stages, waves, tokens, form = cf + (0,) * (6 - len(cf))
    if form:  # A in two alternating register sets, never through shared memory, none rewritten under its wgmma
        kern, stderr, sass = compile_int4_tile(g._w4a16_wgmma_regs_kernel, m, G, hz, dt, split, sdt, bn, tokens,
                                               a_in_registers=True, STAGES=stages, L3=g.regs_layout(bn, warps),
                                               LOADER=form == 2, num_warps=warps)
        assert set(re.findall(r"(\\d+) bytes spill", stderr)) <= {"0"}, stderr[-2000:]
        if form == 2:  # a TMA warp of its own, with its register budget
            assert "ttg.warp_specialize" in kern.asm["ttgir"] and "setmaxnreg" in kern.asm["ptx"]
            # what the form is for, in the SASS: the loader issues a step's copies with no barrier between them,
            # and the MMA warps' loop meets no CTA-wide barrier (only named ones with a thread count)
            ops = re.findall(r"\\b(UTMALDG|BAR\\.SYNC)", sass)
            copies = [i for i, op in enumerate(ops) if op == "UTMALDG"]
            assert copies and all(b - a == 1 for a, b in zip(copies, copies[1:])), ops
            loop = sass[sass.index("HGMMA"):sass.rindex("HGMMA")]
            assert "BAR.SYNC" in loop and not re.search(r"BAR\\.SYNC\\S* 0x[0-9a-f]+ *;", loop), "a CTA-wide barrier"
    else:
        compile_int4_tile(g._w4a16_wgmma_kernel, m, G, hz, dt, split, sdt, bn, tokens, STAGES=stages, num_warps=warps)
    print("compiled", cf, m, G, hz, split)
"""

WS_SCRIPT = GLUON_SM90 + """
from kvant.kernels import w4a16_wgmma_ws as g
# (config, rows, group, asymmetric, x dtype, split, scale dtype or None for x's)
cases = [(cf, 256, 128, False, torch.bfloat16, 1, None) for cf in g.CONFIGS]
cases += [((128, 8, 4, 2, 1, 64), 200, 64, True, torch.float16, 3, None),  # asymmetric fp16, split-K
          ((64, 4, 4, 2, 2, 64), 16, 256, False, torch.bfloat16, 2, None),
          ((128, 8, 3, 2, 1, 256), 256, 128, False, torch.bfloat16, 1, torch.float32),  # the engine's fp32 scales
          ((128, 8, 4, 2, 1, 256), 256, 128, True, torch.bfloat16, 2, torch.float32),  # the largest shared memory
          ((64, 4, 4, 2, 2, 64), 40, 128, True, torch.bfloat16, 2, torch.float32),
          ((128, 8, 3, 3, 8, 256), 130, 256, True, torch.float16, 4, None)]  # as in the GPU test's CUDA graphs
for cf, m, G, hz, dt, split, sdt in cases:
    bn, warps, stages, a_stages, waves, tokens, parts = cf + (1,) * (7 - len(cf))
    kern, stderr, _ = compile_int4_tile(g._w4a16_wgmma_ws_kernel, m, G, hz, dt, split, sdt, bn, tokens,
                                        STAGES=stages, A_STAGES=a_stages, DQ_PARTS=parts, num_warps=warps)
    assert "ttg.warp_specialize" in kern.asm["ttgir"], "no warp-specialized region"
    assert "setmaxnreg" in kern.asm["ptx"], "the partitions' register split is missing"
    if split == 1:  # no spills; the split-K reduction of a 256-token tile may spill a few words, after the loop
        assert set(re.findall(r"(\\d+) bytes spill", stderr)) <= {"0"}, stderr[-2000:]
    regs = re.search(r"Used (\\d+) registers", stderr)
    print("compiled", cf, m, G, hz, split, "shared", kern.metadata.shared, "regs", regs and regs.group(1))
"""


@pytest.mark.parametrize("name", ["w4a16_wgmma", "w4a16_wgmma_ws"])
def test_wgmma_tiles_compile_for_sm90_with_async_mma(name, tmp_path, monkeypatch):
    import importlib

    mod = importlib.import_module(f"kvant.kernels.{name}")
    # extra cases past CONFIGS (the loader form's two only where Gluon has warp specialization)
    script, extra = {"w4a16_wgmma": (SCRIPT, 9 + 2 * getattr(mod, "HAVE_WS", False)),
                     "w4a16_wgmma_ws": (WS_SCRIPT, 6)}[name]
    if not mod.HAVE_GLUON:
        pytest.skip(f"this Triton has no Gluon (or no warp specialization) for {name}")
    monkeypatch.chdir(tmp_path)
    assert run_without_interpreter(script).count("compiled") == len(mod.CONFIGS) + extra


def _repacked(n, k, g):
    # a small symmetric INT4 weight in kvant's repacked layout, on the CPU: (qweight, scales)
    import torch

    from kvant.kernels.int4_pack import pack_int4
    from kvant.kernels.w4a16_layout import repack_w4

    qweight, scales, _ = repack_w4(pack_int4(torch.randint(-8, 8, (n, k), dtype=torch.int8)),
                                   torch.rand(n, k // g).to(torch.bfloat16), g)
    return qweight, scales


@pytest.mark.parametrize("name", ["w4a16_wgmma", "w4a16_wgmma_ws"])
def test_wgmma_tiles_refuse_what_they_cannot_run(name):
    # off an sm_90 GPU (here: the CPU) the call is refused with the reason, and `supported` says no first
    import importlib

    import torch

    mod = importlib.import_module(f"kvant.kernels.{name}")
    k, g = 256, 128
    qweight, scales = _repacked(64, k, g)
    x = torch.randn(4, k, dtype=torch.bfloat16)
    assert not mod.supported(x, qweight, scales, g)
    with pytest.raises(ValueError, match="sm_90"):
        getattr(mod, name)(x, qweight, scales, g)


@pytest.mark.parametrize("config, why", [((128, 8, 3, 2, 1, 128, 2), "multiples of the dequant warpgroups"),
                                         ((128, 8, 4, 3, 1, 128, 2), "multiples of the dequant warpgroups"),
                                         ((128, 8, 4, 2, 1, 128, 3), "1 or 2 dequant warpgroups"),
                                         ((128, 4, 4, 2, 1, 128), "BLOCK_N = 16 \\* warps")])
def test_ws_tile_refuses_configs_it_cannot_run(config, why, monkeypatch):
    # two dequant warpgroups take alternate K steps, each the only reader of its ring stages: the rings' depths must
    # split evenly between them (checked before anything launches)
    import torch

    from kvant.kernels import w4a16_wgmma_ws

    monkeypatch.setattr(w4a16_wgmma_ws, "supported", lambda *a: True)
    k, g = 256, 128
    qweight, scales = _repacked(128, k, g)
    with pytest.raises(ValueError, match=why):
        w4a16_wgmma_ws.w4a16_wgmma_ws(torch.randn(4, k, dtype=torch.bfloat16), qweight, scales, g, config=config)


def test_register_form_refuses_a_block_it_cannot_hold(monkeypatch):
    # its A fragment is one 16-row slab per warp: BLOCK_N must be 16 * warps (checked before anything launches)
    import torch

    from kvant.kernels import w4a16_wgmma

    monkeypatch.setattr(w4a16_wgmma, "supported", lambda *a: True)
    k, g = 256, 128
    qweight, scales = _repacked(128, k, g)
    with pytest.raises(ValueError, match="equal to it in the register form"):
        w4a16_wgmma.w4a16_wgmma(torch.randn(4, k, dtype=torch.bfloat16), qweight, scales, g,
                                config=(128, 4, 4, 1, 64, True))
