"""Run the app under uvicorn: SIGINT/SIGTERM stop accepting, let in-flight requests finish, then exit 0."""
import logging
import signal
import socket

import uvicorn

from kvant.engine.errors import KvantError
from kvant.engine.server.app import DEFAULT_MAX_QUEUE, build_app
from kvant.engine.server.body import DEFAULT_MAX_BODY_BYTES

GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long to finish; the rest are cancelled (and aborted)


class PortInUse(KvantError):
    exit_code = 3  # an environment problem (see the exit-code table in `kvant --help`)


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening address, taken before the model loads: a busy port fails before any weights are read."""
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # lets a restarted server take a port left in TIME_WAIT; Linux still refuses one that another socket listens on
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port)") from None
    sock.set_inheritable(True)
    return sock


def serve(engine, model_name: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_queue: int = DEFAULT_MAX_QUEUE, log_level: str = "info",
          graceful_shutdown_s: float = GRACEFUL_SHUTDOWN_S, sock: socket.socket | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, default_sampling: dict | None = None) -> int:
    """Blocks until a signal stops the server; the engine is shut down on the way out. Returns the exit code.
    `sock`: the address bound by `bind_socket` (bound here when None)."""
    sock = bind_socket(host, port) if sock is None else sock
    app = build_app(engine, model_name, api_key=api_key, max_queue=max_queue, shutdown_engine=True,
                    max_body_bytes=max_body_bytes, default_sampling=default_sampling)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=graceful_shutdown_s, access_log=False)
    server = uvicorn.Server(config)
    # uvicorn re-raises the captured signal after its graceful shutdown; with these no-op handlers in place that
    # re-raise is harmless and the process exits 0 instead of dying by the signal
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        logging.getLogger("kvant.server").error("the server did not start (is %s:%d free?)", host, port)
        return 3
    return 0


def _ignore(_signum, _frame) -> None:
    return None
