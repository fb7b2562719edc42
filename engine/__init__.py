"""kvant's inference engine. Heavy modules load on first use, so `import kvant.engine` stays cheap."""
from importlib import import_module

_LAZY = {
    "LLM": "kvant.engine.llm",
    "AsyncLLM": "kvant.engine.async_llm",
    "SamplingParams": "kvant.engine.sampling_params",
    "EngineConfig": "kvant.engine.config",
    "RequestOutput": "kvant.engine.outputs",
    "CompletionOutput": "kvant.engine.outputs",
    "Logprob": "kvant.engine.outputs",
    "ModelConfig": "kvant.engine.config",
    "load_model": "kvant.engine.loader",
    "dummy_model": "kvant.engine.loader",
    "resolve_model": "kvant.engine.registry",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kvant.engine' has no attribute {name!r}")
