"""AsyncLLM: one background thread owns the engine and all torch work; asyncio talks to it through queues."""
import asyncio
import queue
import threading
import uuid
from collections.abc import AsyncIterator

from kvant.artifact.errors import KvantError
from kvant.engine.llm import EngineFront, build_engine
from kvant.engine.llm_engine import LLMEngine
from kvant.engine.outputs import EngineStats, RequestOutput
from kvant.engine.sampling_params import SamplingParams

IDLE_WAIT_S = 0.5  # how long the idle loop blocks on its command queue before checking for shutdown


class _Stream:
    """The asyncio side of one request: outputs (or an exception) arrive through loop.call_soon_threadsafe."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.accepted: asyncio.Future = loop.create_future()

    def put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def resolve(self, error: BaseException | None) -> None:
        def _set():
            if not self.accepted.done():
                self.accepted.set_exception(error) if error else self.accepted.set_result(None)
        self.loop.call_soon_threadsafe(_set)


class AsyncLLM(EngineFront):
    def __init__(self, model, **engine_kwargs):
        self._start(build_engine(model, **engine_kwargs))

    @classmethod
    def from_model(cls, model, tokenizer=None, **engine_kwargs) -> "AsyncLLM":
        obj = cls.__new__(cls)
        obj._start(build_engine(model, tokenizer, **engine_kwargs))
        return obj

    def _start(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._commands: queue.Queue = queue.Queue()
        self._streams: dict[str, _Stream] = {}
        self._stats = engine.stats()
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="kvant-engine", daemon=True)
        self._thread.start()

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and self._error is None

    def stats(self) -> EngineStats:
        return self._stats  # a snapshot taken by the engine thread after each step

    async def generate(self, prompt: str | list[int], params: SamplingParams | None = None,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Cumulative outputs until one with `finished`. Bad input raises ValueError before the first one."""
        self._check_alive()
        request_id = request_id or uuid.uuid4().hex
        stream = _Stream(asyncio.get_running_loop())
        self._commands.put(("add", request_id, prompt, params or SamplingParams(), stream))
        await stream.accepted
        finished = False
        try:
            while not finished:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            if not finished:  # the consumer went away (e.g. a client disconnect): free its blocks
                self._commands.put(("abort", request_id, None, None, None))

    async def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id, None, None, None))

    async def shutdown(self) -> None:
        self._stopping = True
        self._commands.put(("stop", None, None, None, None))
        await asyncio.to_thread(self._thread.join)

    def _check_alive(self) -> None:
        if self._error is not None:
            raise KvantError(f"the engine stopped after an error: {self._error}")
        if self._stopping or not self._thread.is_alive():
            raise KvantError("the engine is shut down")

    # engine thread
    def _loop(self) -> None:
        engine = self.engine
        try:
            while True:
                block = not engine.has_unfinished_requests()
                try:
                    while True:
                        cmd = self._commands.get(timeout=IDLE_WAIT_S) if block else self._commands.get_nowait()
                        block = False
                        if cmd[0] == "stop":
                            self._fail_all(KvantError("the engine is shut down"))
                            return
                        self._handle(*cmd)
                except queue.Empty:
                    pass
                if engine.has_unfinished_requests():
                    outs = engine.step()
                    # the snapshot first: a caller that sees its request finish also sees its blocks freed
                    self._stats = engine.stats()
                    for out in outs:
                        stream = self._streams.get(out.request_id)
                        if stream is not None:
                            stream.put(out)
                            if out.finished:
                                del self._streams[out.request_id]
        except Exception as exc:  # noqa: BLE001 (the engine thread must report every failure to its callers)
            self._error = exc
            self._fail_all(KvantError(f"the engine stopped after an error: {exc}"))

    def _handle(self, kind: str, request_id: str, prompt, params, stream: _Stream | None) -> None:
        engine = self.engine
        if kind == "add":
            if request_id in self._streams:
                stream.resolve(ValueError(f"request_id {request_id!r} is already in use"))
                return
            try:
                engine.add_request(request_id, prompt, params)
            except ValueError as exc:
                stream.resolve(exc)
                return
            self._streams[request_id] = stream
            stream.resolve(None)
        elif kind == "abort":
            out = engine.abort_request(request_id)
            self._stats = engine.stats()
            stream = self._streams.pop(request_id, None)
            if out is not None and stream is not None:
                stream.put(out)

    def _fail_all(self, error: BaseException) -> None:
        for stream in self._streams.values():
            stream.resolve(error)
            stream.put(error)
        self._streams.clear()
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
            if cmd[0] == "add":
                cmd[4].resolve(error)
