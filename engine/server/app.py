"""The FastAPI app: OpenAI routes over an AsyncLLM's public API (generate/abort/stats/tokenizer/max_model_len)."""
import hmac
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

from kvant.engine.server.body import DEFAULT_MAX_BODY_BYTES, BodyLimit, parse_body
from kvant.engine.server.chat import create_chat_completion
from kvant.engine.server.completions import create_completion
from kvant.engine.server.errors import ApiError, install_handlers
from kvant.engine.server.generation import Admission
from kvant.engine.server.metrics import ServerMetrics
from kvant.engine.server.protocol import ChatCompletionRequest, CompletionRequest
from kvant.engine.server.state import ServerState, now_s

DEFAULT_MAX_QUEUE = 1024  # requests without a first token yet; past this a request gets 503
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def build_app(engine, model_name: str, api_key: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE,
              shutdown_engine: bool = False, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
              default_sampling: dict | None = None) -> FastAPI:
    """`shutdown_engine`: the app owns the engine and shuts it down when the server stops."""
    if not model_name:
        raise ValueError("model_name must be a non-empty string")
    if api_key is not None and not api_key:
        raise ValueError("api_key must be a non-empty string or None")
    if max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be > 0, got {max_body_bytes}")
    state = ServerState(engine=engine, model_name=model_name, tokenizer=engine.tokenizer,
                        max_model_len=int(engine.max_model_len), admission=Admission(max_queue),
                        metrics=ServerMetrics(model_name), api_key=api_key, created=now_s(),
                        default_sampling=dict(default_sampling or {}))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if shutdown_engine:
            await engine.shutdown()

    app = FastAPI(title="kvant", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.kvant = state
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    install_handlers(app)

    async def require_key(request: Request) -> None:
        if state.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), state.api_key.encode()):
            raise ApiError(401, "Incorrect or missing API key: send `Authorization: Bearer <key>`")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    @v1.get("/models")
    async def models():
        return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created,
                                            "owned_by": "kvant", "root": state.model_name, "parent": None,
                                            "max_model_len": state.max_model_len}]}

    @v1.post("/completions")
    async def completions(request: Request):
        return await create_completion(state, await parse_body(request, CompletionRequest))

    @v1.post("/chat/completions")
    async def chat_completions(request: Request):
        return await create_chat_completion(state, await parse_body(request, ChatCompletionRequest))

    app.include_router(v1)

    @app.get("/health")
    async def health():
        return {}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(state.metrics.render(engine.stats()), media_type=PROMETHEUS_TEXT)

    return app
