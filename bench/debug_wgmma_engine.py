"""Where the INT4 engine faulted with the wgmma tile (issue 18, H200, 2026-12-07: an illegal memory access in the
first decode warm-up, batch 256, with bench/gpu_run_18w.sh's table): runs bench/engine_quant_pass.py with every wgmma
call logged (shapes, strides, alignment, config) and followed by a device sync outside graph capture, so the fault is
reported at the call that made it, with its arguments. Pass engine_quant_pass's arguments.

    source bench/gpu_env.sh && KVANT_HOME=... python -P bench/debug_wgmma_engine.py --model ... --quant int4 --out DIR
"""
import runpy
import sys
from pathlib import Path

import torch

from kvant.kernels import w4a16_tune

_wgmma = w4a16_tune.KERNELS["wgmma"]


def logged(x, qweight, scales, group_size, zeros=None, config=None):
    print("wgmma", tuple(x.shape), x.stride(), x.dtype, x.data_ptr() % 256, x.is_contiguous(), tuple(qweight.shape),
          qweight.stride(), tuple(scales.shape), scales.stride(), scales.dtype, zeros is None, group_size, config,
          flush=True)
    out = _wgmma(x, qweight, scales, group_size, zeros, config=config)
    if not torch.cuda.is_current_stream_capturing():
        torch.cuda.synchronize()
        print("  ok", tuple(out.shape), bool(out.isfinite().all()), flush=True)
    return out


w4a16_tune.KERNELS["wgmma"] = logged
sys.argv = [str(Path(__file__).with_name("engine_quant_pass.py"))] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
