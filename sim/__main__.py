"""Command line: `python -m sim world ...` generates a world, `python -m sim run ...` simulates users on it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson
import yaml

from sim.agents import AGENTS, InvalidAnswer, ServiceUnavailable, SimulationStopped
from sim.settings import (
    KNOB_SPECS,
    LISTENING_KNOB_SPECS,
    LISTENING_KNOBS,
    SIZE_SETTINGS,
    SOURCE_KEYS,
    SOURCES,
    generator_arguments,
    kind_type,
)
from sim.sources import build_world
from sim.world import WorldError

# Every `world:` setting of a generated world: key (and flag) -> (type, help text).
WORLD_SETTINGS = {
    **{key: (kind_type(kind), text) for key, (_, kind, text) in SIZE_SETTINGS.items()},
    **{name: (kind_type(kind), text) for name, (kind, text) in KNOB_SPECS.items()},
}


class WorldSettingsError(ValueError):
    """The world's settings cannot be completed from the command line and the params file."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__, allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)

    world = commands.add_parser(
        "world",
        allow_abbrev=False,
        help="generate a world folder (tracks.json, users.json, tracks.npy, world.json)",
        description="Generate a deterministic synthetic world: same settings, byte-identical files. Every setting "
        "not given as a flag is read from the params file's `world:` section.",
    )
    world.add_argument("--out", required=True, type=Path, help="folder to write the world into")
    world.add_argument(
        "--course-catalog",
        type=Path,
        metavar="DIR",
        help="build the course's own world instead: DIR holds the course's tracks.json and users.json "
        "(copied as they are); the hidden embeddings come from the generator's knobs "
        "(--tracks, --users and the artist-size knobs are then taken from the catalog). Without "
        "this flag, the params file's `world: source: course` and `course_dir` choose it",
    )
    world.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="YAML file whose `world:` section holds the settings not given as flags "
        "(default: params.yaml in the current folder)",
    )
    world.add_argument(
        "--source",
        choices=SOURCES,
        default=None,
        help="generated: a catalog tree of genres, styles and artists (sim.generator); listening: LightFM WARP "
        "factors of a synthetic listening history, as the course made its world (sim.listening); course: see "
        "--course-catalog (default: the params file's world.source, else generated)",
    )
    for name, (kind, text) in WORLD_SETTINGS.items():
        world.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None, help=text)
    listening = world.add_argument_group(
        "the listening source's knobs (default: the params file's world.listening)",
        "Shared with the tree: seed, tracks, users, the artist-size and popularity knobs, and interests.",
    )
    for name, (kind, text) in LISTENING_KNOB_SPECS.items():
        listening.add_argument(
            f"--listening-{name.replace('_', '-')}", dest=f"listening_{name}", type=kind_type(kind), help=text
        )

    run = commands.add_parser(
        "run",
        help="simulate listening sessions against a recommender",
        description="Simulate days of listening sessions and print a per-day table of session reward and steps.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run.add_argument("--world", required=True, type=Path, help="world folder")
    run.add_argument("--agent", choices=AGENTS, default="random", help="the recommender")
    run.add_argument("--url", help="service URL for --agent http, e.g. http://127.0.0.1:5000")
    run.add_argument("--episodes", type=int, default=100, help="sessions per day")
    run.add_argument("--seed", type=int, required=True, help="seed of the simulated traffic")
    run.add_argument("--days", type=int, default=1, help="days to run back to back")
    run.add_argument(
        "--first-day",
        type=int,
        default=0,
        help="continue an earlier run of the same seed and --episodes: start at this day (its users, first tracks "
        "and clock), e.g. after retraining the service's models on the days before",
    )
    run.add_argument("--shard", help="I/N: play only the episodes of users whose row is I modulo N (0 <= I < N)")
    run.add_argument("--processes", type=int, default=1, help="worker processes (users are split between them)")
    run.add_argument("--connections", type=int, default=4, help="concurrent keep-alive connections per process (http)")
    run.add_argument("--summary", type=Path, help="write the summary as JSON here")
    run.add_argument("--trace", type=Path, help="write one JSON line per playback here")
    run.add_argument("--strict", action="store_true", help="stop at the first invalid answer")
    run.add_argument("--pause-between-days", action="store_true", help="ask y/n before each new day")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _world_section(params_path: Path) -> dict:
    try:
        section = (yaml.safe_load(params_path.read_text(encoding="utf-8")) or {}).get("world")
    except yaml.YAMLError as error:
        raise WorldSettingsError(f"{params_path}: not valid YAML ({error})") from None
    if not isinstance(section, dict):
        raise WorldSettingsError(f"{params_path} has no `world:` section")
    return section


def source_of(params_path: Path) -> str:
    """The params file's `world.source` (generated when there is no params file or no source key)."""
    source = _world_section(params_path).get("source", "generated") if params_path.is_file() else "generated"
    if source not in SOURCES:
        raise WorldSettingsError(f"{params_path}: world.source must be one of {', '.join(SOURCES)}, got {source!r}")
    return source


def course_catalog_of(params_path: Path) -> Path:
    """The course folder the params file's `world:` names (`course_dir`), relative to that file."""
    section = _world_section(params_path)
    if not section.get("course_dir"):
        raise WorldSettingsError(f"{params_path}: world.source is 'course' but world.course_dir is not set")
    return params_path.parent / Path(section["course_dir"]).expanduser()


def listening_knobs(given: dict, params_path: Path) -> dict:
    """The listening source's knobs: the `--listening-*` flags given, the rest from the params file."""
    section = (_world_section(params_path).get("listening") if params_path.is_file() else None) or {}
    unknown = sorted(set(section) - set(LISTENING_KNOBS))
    if unknown:
        known = list(LISTENING_KNOBS)
        raise WorldSettingsError(f"{params_path}: unknown world.listening knobs {unknown}; known: {known}")
    knobs = {name: given[name] if given.get(name) is not None else section.get(name) for name in LISTENING_KNOBS}
    absent = [name for name, value in knobs.items() if value is None]
    if absent:
        raise WorldSettingsError(
            f"the listening world needs {absent}: give them as --listening-* flags or in {params_path}'s "
            "world.listening section"
        )
    return knobs


def world_settings(given: dict, params_path: Path) -> dict:
    """Every world setting: the flags given, the rest from the params file's `world:` section."""
    missing = [name for name in WORLD_SETTINGS if given.get(name) is None]
    if not missing:
        return dict(given)
    if not params_path.is_file():
        raise WorldSettingsError(
            f"{params_path} not found, and these world settings were not given as flags: "
            f"{', '.join('--' + name.replace('_', '-') for name in missing)}"
        )
    section = _world_section(params_path)
    unknown = sorted(set(section) - set(WORLD_SETTINGS) - set(SOURCE_KEYS))
    if unknown:
        raise WorldSettingsError(f"{params_path}: unknown world settings {unknown}; known: {list(WORLD_SETTINGS)}")
    absent = [name for name in missing if name not in section]
    if absent:
        raise WorldSettingsError(f"{params_path}: `world:` lacks {absent} and no flag gives them")
    return {name: given[name] if given.get(name) is not None else section[name] for name in WORLD_SETTINGS}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "world":
            settings = world_settings({name: getattr(args, name) for name in WORLD_SETTINGS}, args.params)
            source = "course" if args.course_catalog else args.source or source_of(args.params)
            given = {name: getattr(args, f"listening_{name}") for name in LISTENING_KNOBS}
            meta = build_world(
                args.out,
                source,
                generator_arguments(settings),
                listening=listening_knobs(given, args.params) if source == "listening" else None,
                course_catalog=(args.course_catalog or course_catalog_of(args.params)) if source == "course" else None,
            )
            if source == "listening":
                print(f"listening world written to {args.out} (content sha256 {meta['content_sha256']})")
                return 0
            if source == "course":
                print(
                    f"course world written to {args.out} ({meta['parameters']['n_tracks']} tracks, "
                    f"{meta['parameters']['n_users']} users; content sha256 {meta['content_sha256']})"
                )
                return 0
            print(f"world written to {args.out} (content sha256 {meta['content_sha256']})")
            return 0
        from sim.run import parse_shard, simulate
        from sim.summary import format_summary

        summary = simulate(
            args.world,
            agent=args.agent,
            episodes=args.episodes,
            seed=args.seed,
            days=args.days,
            first_day=args.first_day,
            processes=args.processes,
            url=args.url,
            trace_path=args.trace,
            strict=args.strict,
            progress=not args.no_progress,
            connections=args.connections,
            pause_between_days=args.pause_between_days,
            shard=parse_shard(args.shard) if args.shard else None,
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
