"""Traffic through the service leaves the same files on every run: the simulated clock, the canonical log order and
a summary without the run's port and seconds are what let `make repro` reproduce `dvc.lock`. The in-process
transport writes the very log the real server writes over HTTP."""

from __future__ import annotations

import filecmp
import random

import orjson
import pytest

from botify_lab.formats import LOG_FILE_NAME, rotated_log_name
from botify_lab.pipeline.experiment import (
    InProcessService,
    Traffic,
    put_log_in_canonical_order,
    run_experiment,
    write_service_config,
)
from sim.agents import InvalidAnswer
from sim.episodes import SimulatedClock
from sim.generator import generate_world
from tests.conftest import world_knobs

EXPERIMENT = {"name": "AB", "arms": [{"recommender": "random"}, {"recommender": "sticky_artist"}]}


def same_tree(left, right) -> list[str]:
    """Relative paths whose bytes differ (or exist on one side only); empty when the trees are identical."""
    differences = []
    comparison = filecmp.dircmp(left, right)
    differences += comparison.left_only + comparison.right_only
    differences += [
        name for name in comparison.common_files if not filecmp.cmp(left / name, right / name, shallow=False)
    ]
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
        ".botify-counters.json",
        ".botify.lock",
        f".{LOG_FILE_NAME}.lock",
        LOG_FILE_NAME,
    ]
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
    events = [
        {
            "message": "next",
            "timestamp": 10 + step // 3,
            "user": user,
            "track": step,
            "time": 0.5,
            "latency": 0.0,
            "recommendation": 1,
            "experiments": {},
        }
        for user in (2, 1)
        for step in range(6)
    ]
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
        (event["timestamp"], event["user"], event["track"]) for event in events
    )


def every_recommender_kind(world, folder) -> list[dict]:
    """Two experiments whose arms cover every recommender of the service, with data files for those that need one
    (the second experiment is only logged, as the service does with every experiment after the first)."""
    folder.mkdir()
    rows = [orjson.loads(line) for line in (world / "tracks.json").read_bytes().splitlines()]
    users = [orjson.loads(line)["user"] for line in (world / "users.json").read_bytes().splitlines()]
    (folder / "top.json").write_bytes(orjson.dumps([7, 3, 11, 400, 5]))
    (folder / "indexed.jsonl").write_bytes(
        b"".join(
            orjson.dumps({"user": user, "tracks": [(user * 7 + i) % len(rows) for i in range(5)]}) + b"\n"
            for user in users[::2]
        )
    )  # every other user has a list: the rest fall back to random
    (folder / "contextual.jsonl").write_bytes(
        b"".join(
            orjson.dumps({**row, "recommendations": [(row["track"] + i) % len(rows) for i in range(1, 4)]}) + b"\n"
            for row in rows[: len(rows) // 2]
        )
    )  # tracks without neighbours fall back to random
    arms = [
        {"recommender": "random"},
        {"recommender": "sticky_artist"},
        {"recommender": "toppop", "path": str(folder / "top.json"), "k": 3},
        {"recommender": "indexed", "path": str(folder / "indexed.jsonl")},
        {"recommender": "contextual", "path": str(folder / "contextual.jsonl")},
    ]
    return [{"name": "ALL_KINDS", "arms": arms}, {"name": "LOGGED_ONLY", "arms": arms[:2]}]


def test_in_process_traffic_writes_the_log_the_http_service_writes(tmp_path):
    """Same config and seed, every recommender kind, several processes and days: the two transports' folders are
    byte for byte the same (log, request counters, lock files), and only the summary says which one ran."""
    world = tmp_path / "world"
    generate_world(world, seed=4, n_tracks=900, n_users=150, dim=8, **world_knobs())
    experiments = every_recommender_kind(world, tmp_path / "data")
    runs = {}
    for transport in ("http", "in_process"):
        traffic = Traffic(episodes=160, seed=9, days=2, processes=2, connections=3, transport=transport)
        runs[transport] = run_experiment(world, experiments, traffic, tmp_path / transport)
    http, in_process = runs["http"], runs["in_process"]
    assert same_tree(http, in_process) == []
    assert sorted(path.name for path in in_process.iterdir()) == sorted(path.name for path in http.iterdir())
    events = [orjson.loads(line) for line in (in_process / LOG_FILE_NAME).read_bytes().splitlines()]
    assert {event["experiments"]["ALL_KINDS"] for event in events} == {"C", "T1", "T2", "T3", "T4"}
    assert sum(event["message"] == "last" for event in events) == 2 * 160
    summaries = {name: orjson.loads((log.parent / "summary.json").read_bytes()) for name, log in runs.items()}
    assert summaries["http"]["total"] == summaries["in_process"]["total"]
    assert summaries["in_process"]["agent"] == "InProcessService"
    assert not (in_process.parent / ".in-process-parts").exists()


def test_the_in_process_service_answers_refusals_as_the_simulator_knows_them(tmp_path):
    """A request the service refuses (a 400 over HTTP) is an invalid answer naming the call and the reason, and
    logs nothing; the agent tells the service each request's simulated time."""
    catalog = tmp_path / "tracks.json"
    catalog.write_bytes(
        b"".join(orjson.dumps({"artist": "A", "title": f"t{i}", "track": i}) + b"\n" for i in range(20))
    )
    config = write_service_config(
        tmp_path / "service.yaml", catalog=catalog, log_dir=tmp_path / "log", seed=1, experiments=[EXPERIMENT]
    )
    agent = InProcessService(config, tmp_path / "parts").for_process(0, SimulatedClock(episodes_per_day=10))
    try:
        agent.at(0, 3, 2)
        assert 0 <= agent.recommend(5, 7, 0.25) < 20
        with pytest.raises(InvalidAnswer, match=r"/next refused the request: track must be an integer id in 0\.\.19"):
            agent.recommend(5, 25, 0.5)
        with pytest.raises(InvalidAnswer, match=r"/last refused the request: time must be a number in \[0, 1\]"):
            agent.end_session(5, 7, 1.5)
    finally:
        agent.close()
    (event,) = [orjson.loads(line) for line in (tmp_path / "parts" / "0" / LOG_FILE_NAME).read_bytes().splitlines()]
    assert event["timestamp"] == SimulatedClock(episodes_per_day=10).time_ms(0, 3, 2) and event["track"] == 7


def test_traffic_names_a_known_transport():
    with pytest.raises(ValueError, match="transport must be one of"):
        Traffic(episodes=1, seed=1, transport="carrier-pigeon")
