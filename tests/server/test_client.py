"""The client side of the SSE stream and the free-port helper, against the server's own writer (streaming.py)."""
import asyncio
import socket

import pytest

from kvant.artifact.errors import KvantError
from kvant.engine.server.client import chat_deltas, free_port, sse_chunks
from kvant.engine.server.errors import ApiError
from kvant.engine.server.streaming import sse_events


def written(chunks, fail: Exception | None = None) -> list[str]:
    # what the server sends for these chunks, split into lines as an HTTP client reads them
    async def source():
        for c in chunks:
            yield c
        if fail is not None:
            raise fail

    async def collect():
        return [event async for event in sse_events(source())]
    return "".join(asyncio.run(collect())).splitlines()


def test_chunks_round_trip_and_stop_at_done():
    sent = [{"choices": [{"delta": {"role": "assistant"}}]}, {"choices": [{"delta": {"content": "Hel"}}]},
            {"choices": [{"delta": {"content": "lo"}}]}, {"choices": [], "usage": {"completion_tokens": 2}}]
    lines = written(sent) + ['data: {"choices": [{"delta": {"content": "after"}}]}']
    assert list(sse_chunks(lines)) == sent
    assert list(chat_deltas(sse_chunks(lines))) == ["Hel", "lo"]


def test_in_band_error_raises_with_the_servers_message():
    lines = written([{"choices": [{"delta": {"content": "a"}}]}], fail=ApiError(400, "max_tokens is too large"))
    chunks = sse_chunks(lines)
    assert next(chunks)["choices"][0]["delta"]["content"] == "a"
    with pytest.raises(KvantError, match="server error: max_tokens is too large"):
        next(chunks)


def test_free_port_can_be_bound():
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
