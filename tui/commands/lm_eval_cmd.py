DATA_FLAG = "--kvant-data-dir"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "lm-eval", help="lm-eval's own CLI with the kvant backend registered",
        description="Runs lm-evaluation-harness's CLI with every following argument, after registering the "
                    "`kvant` model backend, e.g. `kvant lm-eval --model kvant --model_args pretrained=DIR "
                    f"--tasks arc_easy`. `{DATA_FLAG} DIR` prepares kvant's local tasks (kvant_arc_easy, ...) "
                    "from a local data folder and adds them through --include_path.")
    p.add_argument("lm_eval_args", nargs="*", help="arguments for lm-eval")
    p.set_defaults(func=run)


def split_data_dir(argv: list[str]) -> tuple[list[str], str | None]:
    rest, data_dir, i = [], None, 0
    while i < len(argv):
        if argv[i] == DATA_FLAG:
            if i + 1 >= len(argv):
                raise ValueError(f"{DATA_FLAG} needs a folder")
            data_dir, i = argv[i + 1], i + 2
        elif argv[i].startswith(DATA_FLAG + "="):
            data_dir, i = argv[i].split("=", 1)[1], i + 1
        else:
            rest.append(argv[i])
            i += 1
    return rest, data_dir


def run(args) -> int:
    import sys
    from pathlib import Path

    argv, data_dir = split_data_dir(list(args.lm_eval_args))
    if data_dir:
        from kvant.eval.data import prepare_tasks
        from kvant.eval.runner import eval_home

        if "--include_path" in argv:
            raise ValueError(f"pass either {DATA_FLAG} or --include_path, not both")
        argv += ["--include_path", str(prepare_tasks(Path(data_dir), eval_home() / "data"))]

    import kvant.eval.lm  # noqa: F401  registers @register_model("kvant")
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0
