"""Benchmark reading the event logs the pipeline reads most: each round of the loop of days, after `make repro`.
Prints one JSON object.

    .venv/bin/python bench/log_reading.py [--logs build/rounds/round0/log ...] [--repeats 3]

Per log: events, and the best of `--repeats` timings of `read_log` (msgspec decodes and type-checks the lines in C,
then the rules across keys are checked column-wise) and of the line-by-line path it falls back on to name a bad line
(orjson to dicts, `event_problem` per line), both giving the same table (checked here). Interleaved, so a busy
machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.params import load_params, training_rounds
from botify_lab.research import logs

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def best_seconds(read, repeats: int) -> tuple[float, pd.DataFrame]:
    timings, events = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        events = read()
        timings.append(time.perf_counter() - started)
    return min(timings), events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=Path, nargs="+", help="event log folders (default: every round's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folders = args.logs or [layout.round_log(name) for name in training_rounds(load_params(PARAMS))]
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:
        sys.exit(f"no event log at {', '.join(missing)}: run `make repro` first or pass --logs PATH ...")
    rows = []
    for folder in folders:
        files = logs.event_log_files(folder)
        typed_seconds, typed = best_seconds(partial(logs.read_log, folder), args.repeats)
        checked_seconds, checked = best_seconds(partial(logs._checked_events_frame, files), args.repeats)
        pd.testing.assert_frame_equal(typed, checked)
        rows.append(
            {
                "log": str(folder),
                "events": len(typed),
                "seconds": round(typed_seconds, 3),
                "events_per_second": round(len(typed) / typed_seconds),
                "line_by_line_seconds": round(checked_seconds, 3),
                "speedup": round(checked_seconds / typed_seconds, 2),
            }
        )
    events = sum(row["events"] for row in rows)
    seconds = sum(row["seconds"] for row in rows)
    print(
        json.dumps(
            {
                "benchmark": "log_reading",
                "logs": rows,
                "events": events,
                "events_per_second": round(events / seconds),
                "line_by_line_events_per_second": round(events / sum(row["line_by_line_seconds"] for row in rows)),
                "load_average": [round(value, 2) for value in os.getloadavg()],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
