import importlib
import os
import sys

import torch

# Without a GPU the Triton kernels run under the interpreter; triton.jit reads TRITON_INTERPRET when a kernel module
# is imported, so modules imported earlier in the session (by engine tests) are reloaded below. With a GPU the
# interpreter tests are skipped (they pass CPU tensors) and test_gpu.py runs the compiled kernels.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
    for _name in [n for n in sys.modules if n.startswith("kvant.kernels.")]:
        importlib.reload(sys.modules[_name])
