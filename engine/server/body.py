"""Request bodies: a byte limit enforced while they arrive (413), and JSON validation off the event loop."""
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from kvant.engine.server.errors import error_body

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: a max-length prompt of a 128k-token model is ~0.5 MB of text


def too_large_message(max_bytes: int) -> str:
    return f"request body is larger than the server's limit of {max_bytes} bytes (kvant serve --max-body-size)"


class BodyLimit:
    """ASGI middleware: a declared Content-Length over the limit is answered 413 before a byte of the body is read;
    a body sent without one (chunked) is cut off with 413 as soon as the received bytes pass the limit."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        if max_bytes <= 0:
            raise ValueError(f"max_body_bytes must be > 0, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_413(send, self.max_bytes)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from its body reader; the app's handler answers 413
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)


async def _send_413(send, max_bytes: int) -> None:
    import json

    body = json.dumps(error_body(413, too_large_message(max_bytes))).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def parse_body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body validated as `model` in a worker thread, so a large body never stalls /health or the streams."""
    raw = await request.body()
    return await run_in_threadpool(_validate, model, raw)


def _validate(model: type[BaseModel], raw: bytes) -> BaseModel:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        # the same shape FastAPI raises, so the one handler in errors.py words every 400
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
