"""Benchmark traffic through the service in process (no sockets), the log written: steps (/next calls) per second.
Prints one JSON object.

    .venv/bin/python bench/in_process_traffic.py [--episodes 25000] [--processes 2] [--http]

Builds the default world (params.yaml `world:`) into a temp folder, then serves the collection's experiment (C Random,
T1 StickyArtist) to `--episodes` sessions with `run_experiment(..., transport="in_process")`: every request goes
through `botify.service.Service` (assignment, recommender, request counter, one log line), the parts are merged and
the log is put in canonical order, all inside the timing. Target: 25,000 sessions in under 5 s (>= 40,000 steps/s).
`--http` also runs the same traffic through the real server over loopback and says whether the logs are the same
bytes.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from botify_lab.formats import LOG_FILE_NAME
from botify_lab.pipeline.experiment import Traffic, run_experiment

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
EXPERIMENT = {"name": "COLLECT", "arms": [{"recommender": "random"}, {"recommender": "sticky_artist"}]}


def timed_run(world: Path, traffic: Traffic, out: Path) -> tuple[float, int]:
    """Seconds of one run and the /next calls its log holds."""
    started = time.perf_counter()
    log = run_experiment(world, [EXPERIMENT], traffic, out)
    seconds = time.perf_counter() - started
    with open(log / LOG_FILE_NAME, "rb") as handle:
        steps = sum(b'"message":"next"' in line for line in handle)
    return seconds, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=25_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=31337)
    parser.add_argument("--http", action="store_true", help="also run the same traffic over HTTP and compare logs")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    load_before = os.getloadavg()  # other work on the machine skews every figure below
    with tempfile.TemporaryDirectory(prefix="botify-in-process-bench-") as scratch_name:
        scratch = Path(scratch_name)
        world = scratch / "world"
        subprocess.run(
            [sys.executable, "-m", "sim", "world", "--out", str(world), "--params", str(PARAMS)],
            check=True,
            capture_output=True,
        )
        traffic = Traffic(episodes=args.episodes, seed=args.seed, processes=args.processes, transport="in_process")
        seconds, steps = timed_run(world, traffic, scratch / "in_process")
        result = {
            "benchmark": "in_process_traffic",
            "episodes": args.episodes,
            "processes": args.processes,
            "steps": steps,
            "seconds": round(seconds, 2),
            "steps_per_second": round(steps / seconds),
            "target_seconds": 5.0,
            "target_steps_per_second": 40_000,
        }
        if args.http:
            http = Traffic(episodes=args.episodes, seed=args.seed, processes=args.processes, transport="http")
            http_seconds, _ = timed_run(world, http, scratch / "http")
            result["http_seconds"] = round(http_seconds, 2)
            result["http_steps_per_second"] = round(steps / http_seconds)
            result["same_log_bytes"] = filecmp.cmp(
                scratch / "in_process" / "log" / LOG_FILE_NAME, scratch / "http" / "log" / LOG_FILE_NAME, shallow=False
            )
    result["load_average_before"] = [round(value, 2) for value in load_before]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
