"""Command line: `python -m botify serve --config FILE [--host 127.0.0.1] [--port 5000] [--workers N]
[--reset-counters]`. Exit code 2 with one line on stderr for anything that stops it starting."""

from __future__ import annotations

import argparse
import sys

from botify_lab.formats import FormatError

from .config import ConfigError
from .eventlog import LogDirError, warn
from .server import main_serve
from .store import StoreStartError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m botify", description="The botify recommender service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the experiments of a config file",
        description=(
            "Serve GET /, GET /track/<id>, GET /experiments, POST /next/<user>, POST /last/<user> for the "
            "experiments of a YAML config, logging every accepted /next and /last to <log_dir>/data.json. "
            "Prints one startup line naming the URL; stops cleanly on SIGTERM or SIGINT. One service per port and "
            "per log folder; a worker that dies is replaced."
        ),
    )
    serve.add_argument("--config", required=True, help="YAML config (paths inside resolve against its folder)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=int, default=5000, help="port to bind; 0 picks a free one (default 5000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes of the granian server (default 1; more need a redis:// store)",
    )
    serve.add_argument(
        "--reset-counters",
        action="store_true",
        help=(
            "count every user's requests from zero (by default the counters continue when the log folder already "
            "holds events, and start from zero for a new or empty one)"
        ),
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return main_serve(args)
    except (ConfigError, FormatError, LogDirError, StoreStartError) as error:
        warn(str(error))
        return 2


if __name__ == "__main__":
    sys.exit(main())
