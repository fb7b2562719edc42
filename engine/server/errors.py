"""OpenAI-shaped error bodies ({"error": {message, type, param, code}}) with vLLM's type names, and their handlers."""
import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kvant.artifact.errors import KvantError

log = logging.getLogger("kvant.server")

ERROR_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError",
               405: "MethodNotAllowedError", 413: "RequestTooLargeError", 415: "UnsupportedMediaTypeError",
               422: "BadRequestError", 500: "InternalServerError", 503: "ServiceUnavailableError"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def error_body(status: int, message: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "BadRequestError"), "param": param,
                      "code": status}}


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(status, message, param), status_code=status, headers=headers)


def error_event(status: int, message: str, param: str | None = None) -> str:
    return f"data: {json.dumps(error_body(status, message, param))}\n\n"


def param_of_value_error(message: str, known: set[str]) -> str | None:
    # kvant's ValueErrors start with the field name ("top_p must be in (0, 1], got 1.5")
    first = message.split(" ", 1)[0]
    return first if first in known else None


# fields typed as unions: pydantic reports each member's failure, which reads badly ("prompt.str: ...")
UNION_MESSAGES = {
    "prompt": "prompt must be a string, a list of strings, a list of token ids or a list of token-id lists",
    "stop": "stop must be a string or a list of strings",
}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    err = errors[0]
    loc = [str(part) for part in err.get("loc", ()) if part != "body"]
    kind = err.get("type", "")
    if kind == "json_invalid":
        return f"request body is not valid JSON: {err.get('msg', '')}", None
    if kind == "extra_forbidden":
        field = ".".join(loc)
        return f"Unrecognized request argument supplied: {field}", loc[0] if loc else None
    if kind == "missing" and not loc:
        return "request body is missing", None
    if len(loc) > 1 and loc[0] in UNION_MESSAGES and kind != "value_error":
        return UNION_MESSAGES[loc[0]], loc[0]
    field = ".".join(loc) or "body"
    msg = err.get("msg", "invalid value")
    msg = msg.removeprefix("Value error, ")
    if not msg.startswith(loc[0] if loc else field):
        msg = f"{field}: {msg}"
    return msg, loc[0] if loc else None


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(KvantError)
    async def _kvant(_request: Request, exc: KvantError):
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        log.exception("unexpected error while serving a request")
        return error_response(500, f"internal server error: {type(exc).__name__}")
