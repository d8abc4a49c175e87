"""Traffic through the real service leaves the same files on every run: the simulated clock, the canonical log
order and a summary without the run's port and seconds are what let `make repro` reproduce `dvc.lock`."""
from __future__ import annotations

import filecmp
import random

import orjson

from botify_lab.formats import LOG_FILE_NAME, rotated_log_name
from botify_lab.pipeline.experiment import Traffic, put_log_in_canonical_order, run_experiment
from sim.generator import generate_world
from tests.conftest import world_knobs

EXPERIMENT = {"name": "AB", "arms": [{"recommender": "random"}, {"recommender": "sticky_artist"}]}


def same_tree(left, right) -> list[str]:
    """Relative paths whose bytes differ (or exist on one side only); empty when the trees are identical."""
    differences = []
    comparison = filecmp.dircmp(left, right)
    differences += comparison.left_only + comparison.right_only
    differences += [name for name in comparison.common_files if not filecmp.cmp(left / name, right / name, shallow=False)]
    for name in comparison.common_dirs:
        differences += [f"{name}/{path}" for path in same_tree(left / name, right / name)]
    return differences


def test_two_runs_over_several_processes_and_connections_leave_identical_files(tmp_path):
    world = tmp_path / "world"
    generate_world(world, seed=3, n_tracks=800, n_users=120, dim=8, **world_knobs())
    traffic = Traffic(episodes=150, seed=5, days=2, processes=2, connections=4)
    first = run_experiment(world, [EXPERIMENT], traffic, tmp_path / "first").parent
    second = run_experiment(world, [EXPERIMENT], traffic, tmp_path / "second").parent
    assert same_tree(first, second) == []
    assert sorted(path.name for path in (first / "log").iterdir()) == [
        ".botify-counters.json", ".botify.lock", f".{LOG_FILE_NAME}.lock", LOG_FILE_NAME]
    assert (first / "log" / ".botify.lock").read_bytes() == b""
    events = [orjson.loads(line) for line in (first / "log" / LOG_FILE_NAME).read_bytes().splitlines()]
    assert {event["latency"] for event in events} == {0.0}
    stamps = [(event["timestamp"], event["user"]) for event in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert sum(event["message"] == "last" for event in events) == 2 * 150
    summary = orjson.loads((first / "summary.json").read_bytes())
    assert summary["total"]["episodes"] == 300 and "url" not in summary and "seconds" not in summary


def test_canonical_order_merges_rotated_files_and_keeps_each_users_order(tmp_path):
    """Equal timestamps of one user (a session of 1,000+ requests shares its last millisecond) keep the log's order."""
    events = [{"message": "next", "timestamp": 10 + step // 3, "user": user, "track": step, "time": 0.5,
               "latency": 0.0, "recommendation": 1, "experiments": {}} for user in (2, 1) for step in range(6)]
    lines = [orjson.dumps(event) + b"\n" for event in events]

    def written(name: str, shuffle_seed: int):
        folder = tmp_path / name
        folder.mkdir()
        per_user = {user: [line for line, event in zip(lines, events) if event["user"] == user] for user in (1, 2)}
        interleaved, rng = [], random.Random(shuffle_seed)
        while any(per_user.values()):
            interleaved.append(per_user[rng.choice([user for user, rest in per_user.items() if rest])].pop(0))
        (folder / rotated_log_name(1)).write_bytes(b"".join(interleaved[:5]))
        (folder / LOG_FILE_NAME).write_bytes(b"".join(interleaved[5:]))
        put_log_in_canonical_order(folder)
        return folder

    one, other = written("one", 1), written("other", 2)
    assert [path.name for path in one.iterdir()] == [LOG_FILE_NAME]
    assert (one / LOG_FILE_NAME).read_bytes() == (other / LOG_FILE_NAME).read_bytes()
    ordered = [orjson.loads(line) for line in (one / LOG_FILE_NAME).read_bytes().splitlines()]
    assert [(event["timestamp"], event["user"], event["track"]) for event in ordered] == sorted(
        (event["timestamp"], event["user"], event["track"]) for event in events)
