"""Command line: `python -m sim world ...` generates a world, `python -m sim run ...` simulates users on it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from sim.agents import InvalidAnswer, ServiceUnavailable, SimulationStopped
from sim.world import KNOBS, WorldError, generate_world


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    world = commands.add_parser(
        "world",
        help="generate a world folder (tracks.json, users.json, tracks.npy, world.json)",
        description="Generate a deterministic synthetic world: same arguments, byte-identical files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    world.add_argument("--out", required=True, type=Path, help="folder to write the world into")
    world.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    world.add_argument("--tracks", type=int, default=50_000, help="catalog size")
    world.add_argument("--users", type=int, default=10_000, help="number of simulated users")
    world.add_argument("--dim", type=int, default=32, help="dimension of the hidden track embeddings")
    for name, (default, text) in KNOBS.items():
        world.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(default), default=default, help=text)

    run = commands.add_parser(
        "run",
        help="simulate listening sessions against a recommender",
        description="Simulate days of listening sessions and print a per-day table of session reward and steps.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument("--world", required=True, type=Path, help="world folder")
    run.add_argument("--agent", choices=("random", "http", "console"), default="random", help="the recommender")
    run.add_argument("--url", help="service URL for --agent http, e.g. http://127.0.0.1:5000")
    run.add_argument("--episodes", type=int, default=100, help="sessions per day")
    run.add_argument("--seed", type=int, required=True, help="seed of the simulated traffic")
    run.add_argument("--days", type=int, default=1, help="days to run back to back")
    run.add_argument("--processes", type=int, default=1, help="worker processes (users are split between them)")
    run.add_argument("--connections", type=int, default=4, help="concurrent keep-alive connections per process (http)")
    run.add_argument("--summary", type=Path, help="write the summary as JSON here")
    run.add_argument("--trace", type=Path, help="write one JSON line per playback here")
    run.add_argument("--strict", action="store_true", help="stop at the first invalid answer")
    run.add_argument("--pause-between-days", action="store_true", help="ask y/n before each new day")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "world":
            knobs = {name: getattr(args, name) for name in KNOBS}
            meta = generate_world(args.out, seed=args.seed, n_tracks=args.tracks, n_users=args.users, dim=args.dim, **knobs)
            print(f"world written to {args.out} (content sha256 {meta['content_sha256']})")
            return 0
        from sim.run import format_summary, simulate

        summary = simulate(
            args.world,
            agent=args.agent,
            episodes=args.episodes,
            seed=args.seed,
            days=args.days,
            processes=args.processes,
            url=args.url,
            trace_path=args.trace,
            strict=args.strict,
            progress=not args.no_progress,
            connections=args.connections,
            pause_between_days=args.pause_between_days,
        )
    except (InvalidAnswer, ServiceUnavailable, SimulationStopped, WorldError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
