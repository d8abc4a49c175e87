"""Stage `toppop`: the top-tracks list (total listen time per track) of the collected log, as the course built it.

Ties in popularity go to the smaller track id, so the list is the same on every run.
"""

from __future__ import annotations

import argparse

import orjson

from botify_lab.formats import atomic_write_bytes
from botify_lab.pipeline import layout
from botify_lab.research.logs import read_log, top_tracks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    ranking = top_tracks(read_log(layout.COLLECT_LOG))
    atomic_write_bytes(layout.TOP_TRACKS, orjson.dumps([int(track) for track in ranking]))
    print(f"toppop: {len(ranking)} tracks ranked from {layout.COLLECT_LOG}")


if __name__ == "__main__":
    main()
