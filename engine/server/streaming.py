"""Server-sent events: one `data: {json}` per chunk, an OpenAI error event on failure, `data: [DONE]` last.

A client that disconnects makes Starlette cancel the response task; the cancellation unwinds through the chunk
generator into `generation.stream_outputs`, whose `finally` aborts the engine requests at once.
"""
import json
import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from kvant.artifact.errors import KvantError
from kvant.engine.server.errors import ApiError, error_event

log = logging.getLogger("kvant.server")

DONE = "data: [DONE]\n\n"


def sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False, allow_nan=False)}\n\n"


async def sse_events(chunks: AsyncIterator[dict]) -> AsyncIterator[str]:
    try:
        async for body in chunks:
            yield sse(body)
    except ApiError as exc:
        yield error_event(exc.status, exc.message, exc.param)
    except (KvantError, ValueError) as exc:
        yield error_event(400, str(exc))
    except Exception as exc:  # the stream has started: report in-band, as vLLM does, instead of cutting it
        log.exception("unexpected error while streaming")
        yield error_event(500, f"internal server error: {type(exc).__name__}")
    yield DONE


def sse_response(chunks: AsyncIterator[dict]) -> StreamingResponse:
    return StreamingResponse(sse_events(chunks), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
