"""The week-2, week-3 and week-5 stages end to end on a tiny hand-made collected log (in a temporary folder)."""

from __future__ import annotations

import hashlib

import numpy as np
import orjson
import pytest

from botify_lab.pipeline import layout
from botify_lab.stages import diverse_i2i, indexed, toppop_offline
from tests.conftest import repo_params

EXPERIMENT = "COLLECT"
RECOMMENDERS = ["random", "sticky_artist"]
CATALOG_SIZE = 60


def tiny_log_rows(seed: int = 0) -> list[dict]:
    """Two taste groups (even users like tracks 0..19, odd users 20..39; tracks 40..59 nobody likes), arms C/T1
    alternating by user; every user plays sessions of their liked tracks (time 1.0) and a few skips (time 0.1)."""
    rng = np.random.default_rng(seed)
    rows, clock = [], 1_700_000_000_000
    for _round in range(3):
        for user in range(40):
            liked = np.arange(20) + (20 if user % 2 else 0)
            arm = "C" if user % 4 < 2 else "T1"
            tracks = rng.choice(liked, size=4, replace=False).tolist() + [int(rng.integers(40, 60))]
            for position, track in enumerate(tracks):
                clock += 1000
                last = position == len(tracks) - 1
                rows.append(
                    {
                        "message": "last" if last else "next",
                        "timestamp": clock,
                        "user": user,
                        "track": track,
                        "time": 0.1 if track >= 40 else 1.0,
                        "latency": 0.001,
                        "recommendation": None if last else 0,
                        "experiments": {EXPERIMENT: arm},
                    }
                )
    return rows


@pytest.fixture
def stage_root(tmp_path, monkeypatch):
    """A repository-like folder: round 0's log (layout.COLLECT_LOG), data/tracks.json (6 artists), the stages' cwd."""
    log = tmp_path / layout.COLLECT_LOG / "data.json"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in tiny_log_rows()))
    catalog = tmp_path / layout.CATALOG
    catalog.parent.mkdir(parents=True)
    catalog.write_bytes(
        b"".join(
            orjson.dumps({"artist": f"artist {track % 6}", "title": f"song {track}", "track": track}) + b"\n"
            for track in range(CATALOG_SIZE)
        )
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def params():
    return repo_params(
        {
            "seed": 7,
            "collect": {"experiment": EXPERIMENT, "recommenders": RECOMMENDERS},
            "indexed": {
                "positive_time": 0.8,
                "min_user_positives": 5,
                "min_track_positives": 5,
                "test_share": 0.3,
                "algorithm": "als",
                "trials": 3,
                "k": 5,
                "top": 10,
                "user_based_neighbours": 5,
            },
            "toppop_offline": {"positive_time": 0.8, "train_share": 0.5, "ks": [5, 20], "k": 5},
            "diverse_i2i": {"k": 6, "per_artist": 2},
        }
    )


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_indexed_then_diverse_i2i_write_the_service_files_and_repeat_byte_for_byte(stage_root):
    result = indexed.run_indexed(params())
    assert result.metrics["users"] == 40 and result.metrics["tracks"] == 40  # tracks 40..59 are never positive
    assert len(result.model.history) == result.metrics["best"]["iterations"]
    user_recs = [orjson.loads(line) for line in layout.USER_RECS.read_bytes().splitlines()]
    assert [row["user"] for row in user_recs] == list(range(40)) and all(len(row["tracks"]) == 10 for row in user_recs)
    user_based = [orjson.loads(line) for line in layout.USER_BASED_RECS.read_bytes().splitlines()]
    assert [row["user"] for row in user_based] == list(range(40))
    assert all(all((track >= 20) == bool(row["user"] % 2) for track in row["tracks"]) for row in user_based)
    assert (stage_root / "metrics" / "indexed.json").is_file() and (stage_root / "plots" / "indexed.csv").is_file()

    lists = diverse_i2i.run_diverse_i2i(params())
    rows = [orjson.loads(line) for line in layout.I2I_RECS.read_bytes().splitlines()]
    assert [row["track"] for row in rows] == list(range(CATALOG_SIZE))
    assert all(row["recommendations"] == [] for row in rows[40:])  # never seen by the model: no list
    for row in rows[:40]:
        assert len(row["recommendations"]) == 6 and row["track"] not in row["recommendations"]
        artists = [track % 6 for track in row["recommendations"]]
        assert max(artists.count(artist) for artist in set(artists)) <= 2
    assert lists.metrics["tracks_with_list"] == 40
    plain = [orjson.loads(line) for line in layout.PLAIN_I2I_RECS.read_bytes().splitlines()]
    assert [row["recommendations"] for row in plain[:40]] == [lists.uncapped[track] for track in range(40)]

    first = {
        path: digest(path)
        for path in (layout.USER_RECS, layout.USER_BASED_RECS, layout.I2I_RECS, layout.PLAIN_I2I_RECS)
    }
    indexed.run_indexed(params())
    diverse_i2i.run_diverse_i2i(params())
    assert {path: digest(path) for path in first} == first


def test_toppop_offline_scores_the_random_arm_halves(stage_root):
    result = toppop_offline.run_toppop_offline(params())
    events_c = sum(1 for row in tiny_log_rows() if row["experiments"][EXPERIMENT] == "C")
    assert result.metrics["random_arm_events"] == events_c
    assert result.metrics["train_events"] + result.metrics["test_events"] == events_c
    table = result.table.set_index("recommender")
    assert list(table.index) == ["TopPop(5)", "TopPop(20)"]
    # the shuffled list of 5 scores r/5 per user, the ranked one the same first 5 tracks for every size
    assert table.loc["TopPop(5)", "ranked_precision_at_5"] == table.loc["TopPop(20)", "ranked_precision_at_5"]
    assert table.loc["TopPop(5)", "shuffled_precision_at_5"] == pytest.approx(
        table.loc["TopPop(5)", "ranked_precision_at_5"]
    )
    written = orjson.loads((stage_root / "metrics" / "toppop_offline.json").read_bytes())
    assert set(written["toppop"]) == {"TopPop(5)", "TopPop(20)"}


def test_offline_table_meets_the_calibration_effects():
    calibration = {
        "arms": {  # metrics/calibration.json's headline: arms of the course's TOP_POP experiment
            "C": {"mean_time_per_session": {"simulated": 2.0, "published": 2.152}},
            "T1": {"mean_time_per_session": {"simulated": 3.0, "published": 2.742}},
        }
    }
    online = toppop_offline.online_effects(calibration)
    assert online.loc[0, "recommender"] == "TopPop(10)"
    assert online.loc[0, "online_effect"] == pytest.approx(50.0)
    assert online.loc[0, "published_effect"] == pytest.approx(100 * (2.742 / 2.152 - 1))


def test_toppop_offline_split_ignores_how_users_interleave():
    """Two runs interleave users differently (wall clock, processes, connections); the cut uses each user's own
    order."""
    import pandas as pd

    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 12, 30)

    def run_log(seed: int) -> pd.DataFrame:
        """One run's log: every user's steps in order, users started at run-dependent wall-clock moments."""
        starts = np.random.default_rng(seed).integers(0, 50, len(sizes))
        rows = [
            {"user": user, "step": step, "timestamp": int(starts[user]) + step}
            for user, size in enumerate(sizes)
            for step in range(size)
        ]
        log = pd.DataFrame(rows).sort_values("timestamp", kind="stable").reset_index(drop=True)
        log["order"] = np.arange(len(log))
        return log

    first, second = run_log(1), run_log(2)
    assert first[["user", "step"]].values.tolist() != second[["user", "step"]].values.tolist()
    cut_first = toppop_offline.split_each_users_history(first, 0.5)
    cut_second = toppop_offline.split_each_users_history(second, 0.5)
    for part_first, part_second in zip(cut_first, cut_second):
        assert part_first[["user", "step"]].values.tolist() == part_second[["user", "step"]].values.tolist()
    train, test = cut_first
    assert train.groupby("user").size().tolist() == [-(-size // 2) for size in sizes]  # first half, rounded up
    last_train, first_test = train.groupby("user")["step"].max().align(test.groupby("user")["step"].min())
    assert (last_train < first_test)[first_test.notna()].all()  # every train event comes before the user's test
