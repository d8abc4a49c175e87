"""The simulator drives the served TOP_POP experiment over HTTP; the service's log must be exactly its steps."""

import json
import random
import subprocess
import sys
from collections import Counter, defaultdict

import orjson
import pytest

from botify.launch import served
from botify_lab.formats import iter_json_lines, log_files

EPISODES = 60


def read_events(log_dir):
    return [row for path in log_files(log_dir) for _, row in iter_json_lines(path)]


@pytest.fixture(scope="module")
def sim_world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim_world")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sim",
            "world",
            "--out",
            str(folder),
            "--source",
            "generated",  # the catalog tree, in a second: any world serves (params.yaml's default is a LightFM fit)
            "--seed",
            "4",
            "--tracks",
            "2000",
            "--users",
            "300",
        ],
        check=True,
        capture_output=True,
    )
    return folder


def top_pop_config(folder, world):
    (folder / "top_tracks.json").write_bytes(orjson.dumps(random.Random(2).sample(range(2000), 1000)))
    arms = [{"recommender": "random"}] + [
        {"recommender": "toppop", "path": "top_tracks.json", "k": k} for k in (10, 100, 1000)
    ]
    config = folder / "botify.yaml"
    config.write_text(
        json.dumps(
            {
                "catalog": str(world / "tracks.json"),
                "log_dir": "log",
                "seed": 9,
                "experiments": [{"name": "TOP_POP", "arms": arms}],
            }
        )
    )
    return config


def simulate_against_service(folder, world, *, processes: int = 1):
    config = top_pop_config(folder, world)
    with served(config) as url:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sim",
                "run",
                "--world",
                str(world),
                "--agent",
                "http",
                "--url",
                url,
                "--episodes",
                str(EPISODES),
                "--seed",
                "11",
                "--processes",
                str(processes),
                "--no-progress",
                "--summary",
                str(folder / "summary.json"),
                "--trace",
                str(folder / "trace.jsonl"),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    summary = json.loads((folder / "summary.json").read_text())
    trace = [json.loads(line) for line in (folder / "trace.jsonl").read_text().splitlines()]
    return summary, trace, read_events(folder / "log")


def steps_from_trace(trace):
    """Each playback but an episode's last asked /next for the following one; the last one is reported by /last."""
    episodes = defaultdict(list)
    for playback in trace:
        episodes[(playback["day"], playback["episode"])].append(playback)
    next_calls, last_calls = Counter(), Counter()
    for playbacks in episodes.values():
        playbacks.sort(key=lambda playback: playback["step"])
        for current, following in zip(playbacks, playbacks[1:]):
            next_calls[(current["user"], current["track"], current["time"], following["track"])] += 1
        final = playbacks[-1]
        last_calls[(final["user"], final["track"], final["time"])] += 1
    return next_calls, last_calls


def test_log_next_lines_equal_the_simulators_steps(sim_world, tmp_path):
    summary, trace, events = simulate_against_service(tmp_path, sim_world)
    next_events = [event for event in events if event["message"] == "next"]
    assert len(next_events) == summary["total"]["steps"] > EPISODES
    assert sum(event["message"] == "last" for event in events) == EPISODES
    assert summary["invalid_answers"] == 0
    expected_next, expected_last = steps_from_trace(trace)
    assert Counter((e["user"], e["track"], e["time"], e["recommendation"]) for e in next_events) == expected_next
    assert Counter((e["user"], e["track"], e["time"]) for e in events if e["message"] == "last") == expected_last
    assert {event["experiments"]["TOP_POP"] for event in events} == {"C", "T1", "T2", "T3"}


def test_seeded_simulation_gives_the_same_log_run_after_run(sim_world, tmp_path):
    """Timestamps and latency aside, the log is a function of the seeds, also with 2 simulator processes."""
    logs = []
    for run in range(2):
        folder = tmp_path / f"run{run}"
        folder.mkdir()
        _, _, events = simulate_against_service(folder, sim_world, processes=2)
        logs.append(
            sorted(orjson.dumps({k: v for k, v in e.items() if k not in ("timestamp", "latency")}) for e in events)
        )
    assert logs[0] == logs[1]
