"""The client's side of `kvant serve`: a free local port to start it on, and its server-sent events (`streaming.py`
writes them) read back into chunks. Standard library only, so a client need not load the server."""
import json
import socket
from collections.abc import Iterable, Iterator

from kvant.artifact.errors import KvantError


def free_port() -> int:
    # the kernel picks one on 127.0.0.1; it is free now, not reserved (another process may take it before we bind)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sse_chunks(lines: Iterable[str]) -> Iterator[dict]:
    """Each `data: {json}` line as a dict, until `data: [DONE]`; an in-band OpenAI error event raises KvantError."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        chunk = json.loads(payload)
        if "error" in chunk:
            error = chunk["error"]
            raise KvantError(f"server error: {error.get('message', error) if isinstance(error, dict) else error}")
        yield chunk


def chat_deltas(chunks: Iterable[dict]) -> Iterator[str]:
    # the non-empty text pieces of a streamed chat completion
    for chunk in chunks:
        for choice in chunk.get("choices", []):
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield text
