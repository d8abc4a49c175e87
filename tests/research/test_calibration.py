"""The in-process TOP_POP replication and its comparison with the published table."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from botify_lab.formats import assign_arm
from botify_lab.inprocess import toppop as in_process
from botify_lab.research import ab
from botify_lab.research import published as calibration
from botify_lab.research.logs import sessionize
from botify_lab.stages.calibrate import calibration_json
from sim.generator import generate_world
from sim.loader import load_world
from sim.lockstep import run_lockstep
from tests.conftest import SHARED_DIR, world_knobs

SHARED_TABLE = SHARED_DIR / "targets" / "published_ab.csv"
TOLERANCES = {"mean_time_per_session": 0.10, "mean_tracks_per_session": 0.05}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    generate_world(folder, seed=3, n_tracks=3000, n_users=300, dim=16, **world_knobs())
    return load_world(folder)


@pytest.fixture(scope="module")
def published():
    return calibration.load_published(calibration.PUBLISHED_TABLE)


def log_of(result, arm_of_user: dict[int, str]) -> pd.DataFrame:
    """The service's log of a traced run: per play a /next row carrying the previous play, then one /last row."""
    rows, clock = [], 0
    for lines in result.trace:
        plays = [orjson.loads(line) for line in lines.splitlines()]
        for position, play in enumerate(plays):
            clock += 1
            last = position == len(plays) - 1
            rows.append(
                {
                    "order": len(rows),
                    "message": "last" if last else "next",
                    "timestamp": clock,
                    "user": play["user"],
                    "track": play["track"],
                    "time": play["time"],
                    "latency": 0.0,
                    "experiments": {calibration.EXPERIMENT: arm_of_user[play["user"]]},
                }
            )
    return pd.DataFrame(rows)


def test_packaged_table_is_the_published_one(published):
    if SHARED_TABLE.exists():
        assert calibration.PUBLISHED_TABLE.read_bytes() == SHARED_TABLE.read_bytes()
    cells = published.set_index(["arm", "metric"])["mean"]
    assert cells[("T2", "mean_time_per_session")] == 3.479 and cells[("C", "mean_tracks_per_session")] == 7.145


def test_load_published_rejects_unknown_experiment_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="NOPE"):
        calibration.load_published(calibration.PUBLISHED_TABLE, "NOPE")
    with pytest.raises(FileNotFoundError):
        calibration.load_published(tmp_path / "missing.csv")


def test_arms_follow_the_services_hash_split():
    recommender = in_process.ArmsRecommender(100, np.array([5533, 7121, 1, 2]), [None, np.arange(10)] * 2, "TOP_POP")
    assert recommender.arm_of(np.array([5533, 7121])).tolist() == [0, 3]  # the course log's test vectors: C and T3
    assert recommender.arm_of(np.array([1, 2])).tolist() == [assign_arm("TOP_POP", 4, 1), assign_arm("TOP_POP", 4, 2)]


def test_top_pop_answers_come_from_each_arms_pool():
    users = np.arange(400)
    pools = [None, np.array([7]), np.array([3, 4]), np.arange(50, 60)]
    recommender = in_process.ArmsRecommender(1000, users, pools, "TOP_POP")
    keys = np.arange(400, dtype=np.uint64) * np.uint64(977)
    answers = recommender.recommend_batch(users, users, np.zeros(400), keys, np.ones(400, dtype=np.int64))
    arms = recommender.arm_of(users)
    assert (answers[arms == 1] == 7).all()
    assert set(answers[arms == 2]) <= {3, 4} and set(answers[arms == 3]) <= set(range(50, 60))
    assert len(set(answers[arms == 0])) > 20  # Random spreads over the catalog
    with pytest.raises(ValueError):
        in_process.ArmsRecommender(10, users, [None, np.array([10])], "X")


def test_in_process_metrics_equal_the_analysis_of_the_equivalent_log(tiny_world):
    seed, episodes = 5, 400
    metrics = in_process.replicate_top_pop(tiny_world, seed, episodes=episodes, random_episodes=200)

    traffic_seed, experiment_seed = in_process.traffic_seeds(seed)
    ranking = np.array(in_process.random_day_top_tracks(tiny_world, traffic_seed, 200))
    pools = [None if k is None else ranking[:k] for _, _, k in calibration.TOP_POP_ARMS]
    recommender = in_process.ArmsRecommender(tiny_world.n_tracks, tiny_world.users.ids, pools, "TOP_POP")
    result = run_lockstep(tiny_world, recommender, experiment_seed, 0, np.arange(episodes), trace=True)
    names = ["C", "T1", "T2", "T3"]
    arm_of_user = {int(u): names[a] for u, a in zip(result.users, recommender.arm_of(result.users))}
    from_log = ab.user_metrics(sessionize(log_of(result, arm_of_user)), "TOP_POP")

    assert len(from_log) == len(metrics) and from_log["sessions"].sum() == episodes
    pd.testing.assert_frame_equal(
        metrics[["user", "arm", "sessions", "tracks"]], from_log[["user", "arm", "sessions", "tracks"]]
    )
    for column in ("time", "mean_time_per_session", "mean_tracks_per_session"):
        np.testing.assert_allclose(metrics[column], from_log[column], rtol=1e-12)
    assert set(metrics["arm"]) == set(names)


def test_replication_is_deterministic_and_seeds_differ(tiny_world):
    first = in_process.replicate_top_pop(tiny_world, 1, episodes=200, random_episodes=100)
    again = in_process.replicate_top_pop(tiny_world, 1, episodes=200, random_episodes=100)
    other = in_process.replicate_top_pop(tiny_world, 2, episodes=200, random_episodes=100)
    pd.testing.assert_frame_equal(first, again)
    assert not first["time"].equals(other["time"])


def means_frame(values: dict[str, tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame(values, index=["mean_time_per_session", "mean_tracks_per_session"]).T


def test_tolerance_ratio_and_ordering(published):
    assert calibration.within_tolerance(1.1, 1.0, 0.10) and not calibration.within_tolerance(1.1001, 1.0, 0.10)
    assert not calibration.within_tolerance(float("nan"), 1.0, 0.1)
    exact = means_frame({"C": (2.152, 7.145), "T1": (2.742, 7.729), "T2": (3.479, 8.478), "T3": (2.769, 7.766)})
    verdict = calibration.compare([exact * 0.96, exact * 1.04], published, TOLERANCES)
    assert verdict.calibrated and verdict.worst == pytest.approx(0.0, abs=1e-9)
    cell = verdict.table.set_index(["arm", "metric"]).loc[("T2", "mean_time_per_session")]
    assert cell["ratio"] == pytest.approx(1.0) and cell["seed_std"] == pytest.approx(0.08 * 3.479 / np.sqrt(2))

    off = exact.copy()
    off.loc["T1", "mean_tracks_per_session"] *= 1.06  # 6% off, tolerance 5%
    verdict = calibration.compare([off], published, TOLERANCES)
    assert not verdict.within and verdict.ordered and verdict.worst == pytest.approx(1.2)

    unordered = exact.copy()
    unordered.loc["T3", "mean_time_per_session"] = 3.5  # T3 above T2: the published ordering is broken
    assert not calibration.published_ordering(unordered["mean_time_per_session"])
    assert not calibration.compare([unordered], published, TOLERANCES).calibrated


def user_frame(arm_values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for arm, values in arm_values.items():
        for value in values:
            rows.append(
                {
                    "user": len(rows),
                    "arm": arm,
                    "sessions": 1,
                    "time": value,
                    "tracks": 7,
                    "mean_time_per_session": value,
                    "mean_tracks_per_session": 7.5,
                }
            )
    return pd.DataFrame(rows)


def test_calibration_json_reports_each_seed_and_the_spread(published):
    seed_a = user_frame({"C": [2.0, 2.2], "T1": [2.7, 2.8], "T2": [3.4, 3.6], "T3": [2.7, 2.9]})
    seed_b = user_frame({"C": [2.2, 2.4], "T1": [2.7, 2.8], "T2": [3.5, 3.7], "T3": [2.7, 2.9]})
    document = calibration_json({0: seed_a, 1: seed_b}, published, TOLERANCES)
    cell = document["arms"]["C"]["mean_time_per_session"]
    assert cell["published"] == 2.152 and cell["simulated"] == pytest.approx(2.2)
    assert cell["ratio"] == pytest.approx(2.2 / 2.152, abs=1e-6)
    assert cell["seeds"]["0"]["simulated"] == pytest.approx(2.1) and cell["seeds"]["1"]["within_tolerance"]
    assert cell["across_seeds"]["std"] == pytest.approx(np.std([2.1, 2.3], ddof=1), abs=1e-6)
    assert document["ordered"] and document["sessions"] == {"0": 8, "1": 8}
    assert document["arms"]["C"]["mean_tracks_per_session"]["within_tolerance"] is True  # 7.5 vs 7.145: 4.97%
    assert document["arms"]["C"]["time"]["within_tolerance"] is None  # reported, not calibrated
    assert all(seed["within_tolerance"] is None for seed in document["arms"]["C"]["time"]["seeds"].values())
    orjson.dumps(document)  # JSON-safe
