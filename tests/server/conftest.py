import threading
import time
from contextlib import contextmanager

import pytest

from kvant.engine.server.client import free_port

MODEL_NAME = "smollm2-test"
MAX_MODEL_LEN = 1024
NUM_KV_BLOCKS = 768  # 200 concurrent short requests need ~600 blocks of 16 tokens


class ServerThread:
    """uvicorn on 127.0.0.1:<free port> in a daemon thread with its own event loop."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=10))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def engine(default_model):
    from kvant.engine.async_llm import AsyncLLM

    # fp32 so that scores match lm-eval's hf backend run in fp32
    eng = AsyncLLM(str(default_model), dtype="float32", device="cpu", max_model_len=MAX_MODEL_LEN,
                   num_kv_blocks=NUM_KV_BLOCKS, max_num_seqs=256, max_num_batched_tokens=2048)
    yield eng
    import asyncio

    asyncio.run(eng.shutdown())


@pytest.fixture(scope="session")
def server(engine):
    from kvant.engine.server import build_app

    with ServerThread(build_app(engine, MODEL_NAME)) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def serve_app():
    """Start extra servers (other api_key / max_queue / engine) for the length of one test."""
    stack = []

    @contextmanager
    def _start(app):
        with ServerThread(app) as srv:
            yield srv

    def start(app) -> ServerThread:
        cm = _start(app)
        srv = cm.__enter__()
        stack.append(cm)
        return srv

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def wait_until_idle(engine, timeout_s: float = 10.0):
    """The engine's stats snapshot once every block is free again (or the last one seen at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = engine.stats()
        idle = stats.num_free_blocks == stats.num_blocks and stats.num_running == 0 and stats.num_waiting == 0
        if idle or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


@pytest.fixture
def idle_stats():
    return wait_until_idle


@pytest.fixture(scope="session")
def hf_model(default_model):
    """transformers' own Llama in fp32: the independent reference for texts and logprobs."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(default_model, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def tokenizer(default_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model)
