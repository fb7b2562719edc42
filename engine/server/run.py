"""Run the app under uvicorn: SIGINT/SIGTERM stop accepting, let in-flight requests finish, then exit 0."""
import logging
import signal

import uvicorn

from kvant.engine.server.app import DEFAULT_MAX_QUEUE, build_app

GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long to finish; the rest are cancelled (and aborted)


def serve(engine, model_name: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_queue: int = DEFAULT_MAX_QUEUE, log_level: str = "info",
          graceful_shutdown_s: float = GRACEFUL_SHUTDOWN_S) -> int:
    """Blocks until a signal stops the server; the engine is shut down on the way out. Returns the exit code."""
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {port}")
    app = build_app(engine, model_name, api_key=api_key, max_queue=max_queue, shutdown_engine=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=graceful_shutdown_s, access_log=False)
    server = uvicorn.Server(config)
    # uvicorn re-raises the captured signal after its graceful shutdown; with these no-op handlers in place that
    # re-raise is harmless and the process exits 0 instead of dying by the signal
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        logging.getLogger("kvant.server").error("the server did not start (is %s:%d free?)", host, port)
        return 1
    return 0


def _ignore(_signum, _frame) -> None:
    return None
