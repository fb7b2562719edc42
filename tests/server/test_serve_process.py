"""`kvant serve` as a process: start-up report, a streamed answer, then SIGTERM/SIGINT end it gracefully (exit 0)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from kvant.engine.server.client import free_port


def _wait_healthy(url: str, proc, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"kvant serve exited early: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("kvant serve did not become healthy")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_process_reports_start_up_and_exits_zero_on_signal(default_model, sig):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-P", "-m", "kvant.tui.cli", "serve", str(default_model), "--port", str(port),
                             "--device", "cpu", "--max-model-len", "256", "--kv-cache-memory", "32MiB",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        _wait_healthy(url, proc, time.monotonic() + 180)
        body = json.dumps({"model": str(default_model), "prompt": "The capital of France is", "max_tokens": 48,
                           "temperature": 0, "ignore_eos": True, "stream": True}).encode()
        chunks = []

        def stream():
            req = urllib.request.Request(f"{url}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                for line in r:
                    chunks.append(line.decode())

        t = threading.Thread(target=stream)
        t.start()
        deadline = time.monotonic() + 60
        while not any(c.startswith("data: {") for c in chunks) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(c.startswith("data: {") for c in chunks), "no token streamed before the signal"
        proc.send_signal(sig)  # mid-stream: the request is finished or aborted, then the process exits
        assert proc.wait(timeout=60) == 0
        t.join(timeout=30)
        assert not t.is_alive()
        out = proc.stdout.read()
        assert "ready in" in out and "KV cache" in out and f"serving {default_model}" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
