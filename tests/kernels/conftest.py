import importlib
import os
import sys

# The Triton kernels run under the interpreter on CPU; triton.jit reads this when a kernel module is imported,
# so modules imported earlier in the session (by engine tests) are reloaded below.
os.environ["TRITON_INTERPRET"] = "1"

for _name in [n for n in sys.modules if n.startswith("kvant.kernels.")]:
    importlib.reload(sys.modules[_name])
