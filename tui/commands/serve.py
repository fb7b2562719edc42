"""`kvant serve MODEL_OR_ARTIFACT`: the OpenAI-compatible HTTP server over kvant's engine."""


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API",
                       description="Serve a model or kvant artifact at /v1/completions, /v1/chat/completions, "
                                   "/v1/models, /health and /metrics. Stop with Ctrl-C or SIGTERM.")
    p.add_argument("model", metavar="MODEL_OR_ARTIFACT",
                   help="the default model's short name, a local HF folder or artifact, or a Hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on /v1 routes")
    p.add_argument("--served-model-name", default=None,
                   help="the name clients pass as `model` (default: MODEL_OR_ARTIFACT as given)")
    p.add_argument("--max-queue", type=int, default=None,
                   help="requests allowed to wait for their first token; more get HTTP 503 (default: 1024)")
    p.add_argument("--max-body-size", default="1MiB",
                   help="largest request body accepted; larger ones get HTTP 413 (default: 1MiB)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    e = p.add_argument_group("engine")
    e.add_argument("--max-num-seqs", type=int, default=None)
    e.add_argument("--max-num-batched-tokens", type=int, default=None)
    e.add_argument("--max-model-len", type=int, default=None)
    e.add_argument("--gpu-memory-utilization", type=float, default=None)
    e.add_argument("--kv-cache-memory", default=None, help='bytes for the KV cache, e.g. "6GiB"')
    e.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default=None)
    e.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    e.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default=None)
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    e.add_argument("--kernel-arch", default=None,
                   help="run the kernel paths of a smaller card, e.g. sm_86 (FP8 artifacts as FP8 weight-only)")
    p.set_defaults(func=run)


ENGINE_FLAGS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "gpu_memory_utilization",
                "kv_cache_memory", "kv_cache_dtype", "dtype", "device", "kernel_arch")


def engine_kwargs(args) -> dict:
    kwargs = {name: getattr(args, name) for name in ENGINE_FLAGS if getattr(args, name) is not None}
    if args.enforce_eager:
        kwargs["enforce_eager"] = True
    return kwargs


def run(args) -> int:
    from kvant.engine.server.app import DEFAULT_MAX_QUEUE
    from kvant.engine.server.run import bind_socket, serve

    max_queue = DEFAULT_MAX_QUEUE if args.max_queue is None else args.max_queue
    if max_queue < 0:
        raise ValueError(f"max_queue must be >= 0, got {max_queue}")
    max_body_bytes = body_size(args.max_body_size)
    import time

    sock = bind_socket(args.host, args.port)  # before the model: a busy port fails before any weights are read
    from kvant.engine.async_llm import AsyncLLM

    started = time.perf_counter()
    try:
        engine = AsyncLLM(args.model, **engine_kwargs(args))
    except BaseException:
        sock.close()
        raise
    print(startup_report(engine.engine, time.perf_counter() - started), flush=True)
    name = args.served_model_name or args.model
    print(f"serving {name} at http://{args.host}:{args.port}/v1", flush=True)
    return serve(engine, name, host=args.host, port=args.port, api_key=args.api_key, max_queue=max_queue,
                 log_level=args.log_level, sock=sock, max_body_bytes=max_body_bytes)


def body_size(text: str) -> int:
    from kvant.engine.memory import parse_size

    try:
        return parse_size(text)
    except ValueError:
        raise ValueError(f"max_body_size must be a size like 1MiB or 65536, got {text!r}") from None


def startup_report(engine, seconds: float) -> str:
    """What `kvant serve` prints once the engine is ready: kernels chosen, memory plan, time to ready."""
    lines = []
    path = getattr(engine, "kernel_path", None)
    if path is not None:
        lines.append(f"kernels: {path.gemm} GEMM, KV cache {path.kv_cache} ({path.reason})")
    runner = engine.runner
    plan = getattr(runner, "memory_plan", None)
    if plan is not None:
        lines.append(plan.breakdown())
    else:
        lines.append(f"KV cache: {runner.num_blocks * runner.block_size:,} tokens on {runner.device}")
    lines.append(f"ready in {seconds:.1f} s (load, KV cache, {len(runner.graphs)} CUDA graphs)")
    return "\n".join(lines)
