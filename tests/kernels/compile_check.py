"""GPU compiles on the CPU: this folder's tests run with TRITON_INTERPRET=1, which replaces @triton.jit, so a script
that compiles kernels for sm_90 (PTX through the ptxas that ships with Triton, no GPU needed) runs in a fresh Python
without it."""
import os
import subprocess
import sys


def run_without_interpreter(script: str) -> str:
    """Runs `script` with TRITON_INTERPRET unset; fails the calling test with its stderr; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-P", "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout
