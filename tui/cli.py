"""`kvant`: one entry point; each subcommand lives in tui/commands/<name>.py (see ARCHITECTURE.md)."""
import argparse
import importlib
import sys

from kvant.tui import __version__

# subcommand name -> module under kvant.tui.commands
COMMANDS = {
    "models": "models",
    "recipes": "recipes",
    "quantize": "quantize",
    "eval": "eval",
    "lm-eval": "lm_eval_cmd",
    "serve": "serve",
    "push": "push",
    "bench": "bench",
    "tui": "tui",
    "demo": "demo",
}

EXIT_CODES = """exit codes (every command):
  0  ok
  1  the eval gate failed
  2  bad usage or input (arguments, recipe, model folder)
  3  environment: busy port, no network, no evaluation data
  4  integrity: a file does not match the artifact's kvant.json (sha256)
errors are one line on stderr; --debug shows the traceback"""


HOME_HELP = ("\n\nFiles: models, artifacts and eval caches live under $KVANT_HOME "
             "(default: $XDG_CACHE_HOME/kvant, i.e. ~/.cache/kvant).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvant", description="Quantize, validate, serve and publish LLMs.",
                                     epilog=EXIT_CODES + HOME_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kvant {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"kvant.tui.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"kvant.tui.commands.{module}":
                raise
            continue  # a command whose module is not installed in this build
        mod.add_parser(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "lm-eval":  # every argument after it belongs to lm-eval's own CLI
        debug = False
        args = argparse.Namespace(command="lm-eval", lm_eval_args=argv[1:], debug=False)
        run = importlib.import_module("kvant.tui.commands.lm_eval_cmd").run
    else:
        parser = build_parser()
        args = parser.parse_args(argv or ["tui"])
        debug = args.debug
        if not hasattr(args, "func"):
            parser.print_help()
            return 2
        run = args.func
    from kvant.engine.errors import KvantError

    try:
        return int(run(args) or 0)
    except (KvantError, ValueError) as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the network, a port, the disk: the environment, not the input (requests' too)
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 3
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        print(f"error: internal error {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
