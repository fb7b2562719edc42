"""Serve hardening: a busy port fails before the model loads (exit 3), bodies over the limit get 413 fast, and a
large body never stalls /health."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx

from .conftest import MODEL_NAME

TEN_MB = 10 * 1024 * 1024


class HealthPoller:
    """GET /health every 10 ms from another thread for the length of a `with` block; `latencies` in seconds."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                assert client.get("/health").status_code == 200
                self.latencies.append(time.perf_counter() - t0)
                time.sleep(0.01)

    def __enter__(self) -> "HealthPoller":
        self.thread.start()
        while not self.latencies:  # connected and answered once before the body starts
            time.sleep(0.005)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.05)  # one more poll after the response
        self.stop.set()
        self.thread.join()


def _post_raw(port: int, head: bytes, chunks, pause_s: float) -> tuple[bytes, float]:
    """Send `head` then each chunk (pausing between them) while reading; returns the response and its delay."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    t0 = time.perf_counter()
    sock.sendall(head)
    reply = bytearray()
    sock.setblocking(False)
    try:
        for chunk in chunks:
            try:
                reply += sock.recv(65536)
            except BlockingIOError:
                pass
            if reply:
                break
            try:
                sock.sendall(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            time.sleep(pause_s)
        sock.setblocking(True)
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536)
        elapsed = time.perf_counter() - t0
    finally:
        sock.close()
    return bytes(reply), elapsed


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def test_declared_10mb_body_is_413_at_once_and_health_stays_fast(server):
    port = server.port
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {TEN_MB}\r\n\r\n").encode()
    body = json.dumps({"model": MODEL_NAME, "prompt": "x" * (TEN_MB - 40)}).encode()[:TEN_MB]
    chunks = [body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)]
    with HealthPoller(server.base_url) as health:
        reply, elapsed = _post_raw(port, head, chunks, 0.05)
    assert _status(reply) == 413, reply[:300]
    assert elapsed < 1.0
    assert b"max-body-size" in reply
    assert max(health.latencies) < 0.1


def test_chunked_10mb_body_is_cut_off_with_413_and_health_stays_fast(server):
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"x" * (256 * 1024)
    framed = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    chunks = [framed] * (TEN_MB // len(piece))
    with HealthPoller(server.base_url) as health:
        reply, elapsed = _post_raw(server.port, head, chunks, 0.005)
    assert _status(reply) == 413, reply[:300]
    assert elapsed < 1.0
    assert max(health.latencies) < 0.1


def test_body_under_the_limit_is_served_and_a_lower_limit_applies(engine, serve_app):
    from kvant.engine.server import build_app

    srv = serve_app(build_app(engine, MODEL_NAME, max_body_bytes=2000))
    small = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2}
    assert httpx.post(srv.base_url + "/v1/completions", json=small, timeout=60).status_code == 200
    big = dict(small, prompt="word " * 500)  # ~2.5 kB
    response = httpx.post(srv.base_url + "/v1/completions", json=big, timeout=60)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == 413 and "2000 bytes" in error["message"]


def test_large_prompt_tokenizes_off_the_event_loop(server):
    # a ~1 MB prompt under the limit: tokenizing it must not stall /health (the answer is a 400: too long)
    body = json.dumps({"model": MODEL_NAME, "prompt": "hello world " * 80000, "max_tokens": 1}).encode()
    assert len(body) < (1 << 20)
    with HealthPoller(server.base_url) as health:
        response = httpx.post(server.base_url + "/v1/completions", content=body,
                              headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "input_tokens"
    assert max(health.latencies) < 0.1


def test_4mb_body_under_a_raised_limit_is_parsed_and_tokenized_without_stalling_health(engine, serve_app):
    from kvant.engine.server import build_app

    srv = serve_app(build_app(engine, MODEL_NAME, max_body_bytes=8 * 1024 * 1024))
    body = json.dumps({"model": MODEL_NAME, "prompt": "hello world " * (4 * 1024 * 1024 // 12),
                       "max_tokens": 1}).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    chunks = [body[i:i + (512 << 10)] for i in range(0, len(body), 512 << 10)]
    with HealthPoller(srv.base_url) as health:
        reply, _ = _post_raw(srv.port, head, chunks, 0.02)
    assert _status(reply) == 400  # parsed and tokenized: longer than the model's context
    assert max(health.latencies) < 0.1


def test_busy_port_fails_before_the_model_loads(tmp_path, default_model):
    # the model's config is read (--generation-config), its weights never: a copy without them fails only at load
    import shutil

    shutil.copytree(default_model, tmp_path / "no-model", ignore=shutil.ignore_patterns("*.safetensors"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-P", "-m", "kvant.tui.cli", "serve", str(tmp_path / "no-model"),
                               "--port", str(port), "--device", "cpu"], capture_output=True, text=True, env=env,
                              timeout=120)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot listen on 127.0.0.1:") and str(port) in lines[0]
    assert "serving" not in proc.stdout and "Traceback" not in proc.stderr
