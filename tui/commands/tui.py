def add_parser(sub) -> None:
    p = sub.add_parser("tui", help="open the terminal UI (the default with no command)",
                       description="Open kvant's terminal UI: models, quantize, evaluate, serve, chat, push.")
    p.set_defaults(func=run)


def run(args) -> int:
    from kvant.tui.app import make_app

    make_app().run()
    return 0
