"""kvant's OpenAI-compatible HTTP server (`kvant serve`)."""
from kvant.engine.server.app import build_app

__all__ = ["build_app"]
