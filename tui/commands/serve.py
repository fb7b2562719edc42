"""`kvant serve MODEL_OR_ARTIFACT`: the OpenAI-compatible HTTP server over kvant's engine."""
import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API",
                       description="Serve a model or kvant artifact at /v1/completions, /v1/chat/completions, "
                                   "/v1/models, /health and /metrics. Stop with Ctrl-C or SIGTERM.",
                       epilog="The default model lives under $KVANT_HOME/models (KVANT_HOME defaults to "
                              "~/.cache/kvant).")
    p.add_argument("model", metavar="MODEL_OR_ARTIFACT",
                   help="the default model's short name, a local HF folder or artifact, or a Hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on /v1 routes")
    p.add_argument("--served-model-name", default=None,
                   help="the name clients pass as `model` (default: MODEL_OR_ARTIFACT as given)")
    p.add_argument("--max-queue", type=int, default=None,
                   help="requests allowed to wait for their first token; more get HTTP 503 (default: 1024)")
    p.add_argument("--max-body-size", default="1MiB",
                   help="largest request body accepted; larger ones get HTTP 413 (default: 1MiB)")
    p.add_argument("--no-verify", action="store_true",
                   help="load an artifact without checking its files against kvant.json (printed as a warning)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="server log level (default: info)")
    e = p.add_argument_group("engine")
    e.add_argument("--max-num-seqs", type=int, default=None,
                   help="sequences in one engine step (default: 256)")
    e.add_argument("--max-num-batched-tokens", type=int, default=None,
                   help="tokens in one engine step; longer prompts prefill in chunks (default: 8192)")
    e.add_argument("--max-model-len", type=int, default=None,
                   help="context length in tokens (default: the model's)")
    e.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help="share of the GPU kvant may use, in (0, 1] (default: 0.9)")
    e.add_argument("--kv-cache-memory", default=None, help='bytes for the KV cache, e.g. "6GiB"')
    e.add_argument("--gpu-memory", default=None,
                   help='plan as if the card had this much memory, e.g. "24GiB" (a 24 GB card on a larger one)')
    e.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default=None,
                   help="auto: the model dtype; fp8: e4m3 with the checkpoint's k/v scales")
    e.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    e.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                   help="launch each decode step before the last one's tokens are read (default: on with CUDA graphs)")
    e.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default=None,
                   help="weights and activations (default auto: the checkpoint's dtype on CUDA; on CPU bf16 where "
                        "the CPU has native bf16 (AVX512-BF16, AMX, Arm BF16) and the checkpoint is bf16, else "
                        "float32)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="where to run (default auto: CUDA if visible)")
    e.add_argument("--kernel-arch", default=None,
                   help="run the kernel paths of a smaller card, e.g. sm_86 (FP8 artifacts as FP8 weight-only)")
    add_vllm_flags(p)
    p.set_defaults(func=run)


# ---- vLLM's flags, same names and meanings (issue #23)
def add_vllm_flags(p) -> None:
    v = p.add_argument_group("vLLM-compatible options")
    v.add_argument("--seed", type=int, default=None, help="seed for requests that bring none (default: 0)")
    v.add_argument("--chat-template", default=None, metavar="FILE_OR_JINJA",
                   help="chat template for /v1/chat/completions: a Jinja file or the template inline "
                        "(default: the tokenizer's)")
    v.add_argument("--generation-config", default="auto", metavar="auto|vllm|FOLDER",
                   help="sampling defaults: auto reads the model's generation_config.json, vllm uses vLLM's "
                        "defaults, FOLDER reads FOLDER/generation_config.json; request fields override them")
    v.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None,
                   help="reuse the KV cache of shared prompt prefixes (default: on)")
    v.add_argument("--trust-remote-code", action="store_true",
                   help="accepted for vLLM scripts; kvant never runs a model's own code and refuses models "
                        "that need it")
    v.add_argument("--tensor-parallel-size", "-tp", type=int, default=1, metavar="N",
                   help="kvant serves one GPU; N > 1 prints the `vllm serve` command for this model on N GPUs")


def vllm_checks(args) -> tuple[str | None, dict] | None:
    """Before the port or the model: the TP handover (None: it was printed), chat template and sampling defaults."""
    import sys

    from kvant.engine import vllm_options as vo
    from kvant.artifact.errors import KvantError

    options = {**vars(args), "enable_prefix_caching": args.enable_prefix_caching}
    try:
        vo.check_tensor_parallel(args.tensor_parallel_size, args.model, options)
    except KvantError:
        print(f"kvant serves one GPU; vLLM loads this artifact as it is. For {args.tensor_parallel_size} GPUs "
              f"run:", file=sys.stderr)
        print(vo.vllm_serve_command(args.model, args.tensor_parallel_size, options), flush=True)
        return None
    from kvant.engine.registry import resolve_model

    path = resolve_model(args.model)
    vo.check_remote_code(path)
    template = vo.load_chat_template(args.chat_template) if args.chat_template else None
    return template, vo.sampling_defaults(args.generation_config, path)


ENGINE_FLAGS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "gpu_memory_utilization", "gpu_memory",
                "kv_cache_memory", "kv_cache_dtype", "dtype", "device", "kernel_arch", "seed",
                "enable_prefix_caching", "async_scheduling")


def engine_kwargs(args) -> dict:
    kwargs = {name: getattr(args, name) for name in ENGINE_FLAGS if getattr(args, name, None) is not None}
    if args.enforce_eager:
        kwargs["enforce_eager"] = True
    if getattr(args, "no_verify", False):
        kwargs["verify"] = False
    return kwargs


def run(args) -> int:
    from kvant.engine.server.app import DEFAULT_MAX_QUEUE
    from kvant.engine.server.run import bind_socket, serve

    max_queue = DEFAULT_MAX_QUEUE if args.max_queue is None else args.max_queue
    if max_queue < 0:
        raise ValueError(f"max_queue must be >= 0, got {max_queue}")
    max_body_bytes = body_size(args.max_body_size)
    checked = vllm_checks(args)
    if checked is None:
        return 2
    chat_template, default_sampling = checked
    import time

    sock = bind_socket(args.host, args.port)  # before the model: a busy port fails before any weights are read
    from kvant.engine.async_llm import AsyncLLM

    started = time.perf_counter()
    try:
        engine = AsyncLLM(args.model, **engine_kwargs(args))
    except BaseException:
        sock.close()
        raise
    if chat_template is not None:
        engine.tokenizer.chat_template = chat_template
    print(startup_report(engine.engine, time.perf_counter() - started), flush=True)
    name = args.served_model_name or args.model
    print(f"serving {name} at http://{args.host}:{args.port}/v1", flush=True)
    return serve(engine, name, host=args.host, port=args.port, api_key=args.api_key, max_queue=max_queue,
                 log_level=args.log_level, sock=sock, max_body_bytes=max_body_bytes,
                 default_sampling=default_sampling)


def body_size(text: str) -> int:
    from kvant.engine.config import parse_size

    try:
        return parse_size(text)
    except ValueError:
        raise ValueError(f"max_body_size must be a size like 1MiB or 65536, got {text!r}") from None


def startup_report(engine, seconds: float) -> str:
    """What `kvant serve` prints once the engine is ready: kernels chosen, memory plan, time to ready."""
    lines = []
    path = engine.kernel_path
    if path is not None:
        lines.append(f"kernels: {path.gemm} GEMM, KV cache {path.kv_cache} ({path.reason})")
    runner = engine.runner
    lines.append(f"dtype: {str(runner.dtype).removeprefix('torch.')} on {runner.device} (--dtype to change)")
    lines.append(engine.memory_plan.breakdown())
    times = getattr(engine, "startup_times", None) or {}
    stages = ", ".join(f"{stage} {s:.1f} s" for stage, s in times.items())
    lines.append(f"ready in {seconds:.1f} s ({stages or 'load, KV cache'}; {len(runner.graphs)} CUDA graphs)")
    return "\n".join(lines)
