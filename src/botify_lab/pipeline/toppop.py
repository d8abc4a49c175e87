"""Stage `toppop`: the top-tracks list (total listen time per track) from the collected log, as the course built it."""
from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from botify_lab.catalog import atomic_write_bytes
from botify_lab.logs import read_log, top_tracks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="build/collect/log", type=Path, help="event-log folder to count listens in")
    parser.add_argument("--out", default="build/toppop/top_tracks.json", type=Path, help="ONE JSON list, most popular first")
    args = parser.parse_args(argv)
    ranking = top_tracks(read_log(args.log))
    atomic_write_bytes(args.out, orjson.dumps([int(track) for track in ranking]))
    print(f"toppop: {len(ranking)} tracks ranked from {args.log}")


if __name__ == "__main__":
    main()
