"""The calibrate and leaderboard stages' code: TOP_POP through the real service, and the leaderboard's helpers."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from botify_lab.pipeline.experiment import Traffic
from botify_lab.research import ab
from botify_lab.stages.calibrate import arm_mean_intervals, replicate_through_the_service
from botify_lab.stages.leaderboard import arm_summary, leaderboard_arms, leaderboard_json, service_arms
from sim.generator import generate_world
from tests.conftest import repo_params, world_knobs


@pytest.mark.timeout(120)
def test_replication_through_the_service(tmp_path):
    world = tmp_path / "world"
    generate_world(world, seed=1, n_tracks=2000, n_users=150, dim=16, **world_knobs())
    metrics = replicate_through_the_service(
        world, tmp_path / "run", 7, Traffic(episodes=120, seed=0, connections=4), random_episodes=60
    )

    ranking = orjson.loads((tmp_path / "run" / "top_tracks.json").read_bytes())
    assert len(ranking) == len(set(ranking)) > 60  # every played track ranked once, most listened first
    assert set(metrics["arm"]) == {"C", "T1", "T2", "T3"} and metrics["sessions"].sum() == 120
    top_ten = set(ranking[:10])
    log_rows = [orjson.loads(line) for line in (tmp_path / "run" / "top_pop" / "log" / "data.json").open("rb")]
    served_t1 = {
        row["recommendation"] for row in log_rows if row["message"] == "next" and row["experiments"]["TOP_POP"] == "T1"
    }
    assert served_t1 and served_t1 <= top_ten  # T1 serves only the top 10 of the Random day's log
    intervals = arm_mean_intervals(metrics, ["mean_time_per_session", "mean_tracks_per_session"])
    assert ((intervals["lower"] <= intervals["mean"]) & (intervals["mean"] <= intervals["upper"])).all()


def test_leaderboard_arms_and_summary(tmp_path):
    params = repo_params({"leaderboard": {"toppop_k": 100}}, models=("contextual", "ours"))
    full = leaderboard_arms(params, tmp_path / "reference.json")
    assert [arm["label"] for arm in full] == [
        "Random",
        "StickyArtist",
        "TopPop(100)",
        "User-based",
        "Collaborative (Indexed)",
        "Contextual",
        "Diverse i2i",
        "Ours",
        "Contextual on the first track",
        "StickyArtist, TopPop after a skip",
        "User history",
        "Reference: true neighbours",
    ]
    assert [arm["name"] for arm in full] == ["C"] + [f"T{i}" for i in range(1, 12)]
    first_track = full[8]  # a recommender of one's own: its class, constructor params and data files
    assert first_track["recommender"] == "examples/recommenders/first_track_contextual.py:FirstTrackContextual"
    assert first_track["data"] == {"neighbours": "build/recs/contextual.json"} and "params" not in first_track
    arms = [full[i] for i in (0, 1, 2, 4, 5, 7)]  # six arms for the summary below
    arms = [{**arm, "name": name} for arm, name in zip(arms, ["C", "T1", "T2", "T3", "T4", "T5"])]
    assert arms[0]["recommender"] == "random" and arms[2]["k"] == 100
    assert all("label" not in arm for arm in service_arms(arms)) and service_arms(arms)[5]["path"].endswith("ours.json")

    labels = {arm["name"]: arm["label"] for arm in arms}
    rng = np.random.default_rng(0)
    rows = [
        {
            "user": user,
            "arm": arm,
            "sessions": 1 + user % 2,
            "time": level + rng.normal(0, 0.1),
            "tracks": 6 + user % 5,
            "latency": 1.0 + user % 3,
        }
        for user, (arm, level) in enumerate([(a, lvl) for a, lvl in zip(labels, [2, 3, 4, 5, 6, 7]) for _ in range(30)])
    ]
    metrics = pd.DataFrame(rows)
    metrics["mean_request_latency"] = metrics["latency"] / metrics["tracks"]
    metrics["mean_tracks_per_session"] = metrics["tracks"] / metrics["sessions"]
    metrics["mean_time_per_session"] = metrics["time"] / metrics["sessions"]
    summary = arm_summary(metrics, labels)
    assert summary.index.tolist() == ["T5", "T4", "T3", "T2", "T1", "C"] and summary.loc["T5", "recommender"] == "Ours"
    effects = ab.ab_effects(metrics)
    document = leaderboard_json(
        metrics,
        effects,
        experiment="LEADERBOARD",
        labels=labels,
        srm=ab.srm_check(metrics["arm"].value_counts()),
        alpha=0.05,
    )
    assert document["ranking"][0] == "Ours" and document["recommenders"]["T2"] == "TopPop(100)"
    assert document["effects"]["T5"]["mean_time_per_session"]["significant"]
    assert "mean_request_latency" not in document["effects"]["T5"]
    orjson.dumps(document)
