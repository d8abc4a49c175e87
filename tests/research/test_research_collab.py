"""The Indexed recommender's model: positives, a seeded BPR model that finds taste groups, and the JSONL it writes."""
from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from botify_lab.research import collab

from .research_helpers import event, write_log


def two_taste_groups(users_per_group: int = 30, seed: int = 0) -> pd.DataFrame:
    """Even users like tracks 0..19, odd users like 20..39, in a 60-track catalog; each user saw 8 of theirs."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(2 * users_per_group):
        liked = np.arange(20) + (20 if user % 2 else 0)
        for track in rng.choice(liked, size=8, replace=False):
            rows.append((user, int(track)))
    return pd.DataFrame(rows, columns=["user", "track"])


def test_positive_interactions_keep_listens_above_the_threshold(tmp_path):
    rows = [
        event("next", 1, 1, 5, 1.0), event("next", 2, 1, 6, 0.8), event("next", 3, 1, 7, 0.81),
        event("last", 4, 1, 5, 0.9), event("last", 5, 2, 6, 0.95),
    ]
    write_log(tmp_path / "log" / "data.json", rows)
    from botify_lab.research import logs

    positives = collab.positive_interactions(logs.read_log(tmp_path / "log"))
    assert positives.values.tolist() == [[1, 5, 2], [1, 7, 1], [2, 6, 1]]


def test_bpr_recommends_each_user_their_own_taste_group():
    interactions = two_taste_groups()
    model = collab.train_bpr(interactions, 60, factors=8, epochs=40, lr=0.05, batch_size=64, seed=0,
                             progress=False)
    assert model.history[-1]["loss"] < 0.5 * model.history[0]["loss"]
    recommendations = collab.recommend_users(model, 10)
    assert sorted(recommendations) == list(range(60))
    for user, tracks in recommendations.items():
        in_group = sum((track >= 20) == bool(user % 2) for track in tracks)
        assert in_group >= 9, (user, tracks)


def test_bpr_is_deterministic_for_a_seed():
    interactions = two_taste_groups()
    settings = dict(factors=4, epochs=3, batch_size=32, progress=False)
    first = collab.train_bpr(interactions, 60, seed=7, **settings)
    again = collab.train_bpr(interactions, 60, seed=7, num_threads=2, **settings)
    other = collab.train_bpr(interactions, 60, seed=8, **settings)
    assert np.array_equal(first.track_factors, again.track_factors)
    assert np.array_equal(first.user_factors, again.user_factors)
    assert not np.array_equal(first.track_factors, other.track_factors)


def test_seen_tracks_stay_unless_excluded():
    interactions = two_taste_groups()
    model = collab.train_bpr(interactions, 60, factors=8, epochs=40, lr=0.05, batch_size=64, seed=0,
                             progress=False)
    seen = interactions.groupby("user")["track"].apply(set)
    kept = collab.recommend_users(model, 20)
    assert any(seen[user] & set(tracks) for user, tracks in kept.items())
    filtered = collab.recommend_users(model, 20, exclude_seen=True, interactions=interactions)
    assert all(not (seen[user] & set(tracks)) for user, tracks in filtered.items())
    assert all(len(tracks) == 20 == len(set(tracks)) for tracks in filtered.values())
    with pytest.raises(ValueError, match="needs the interactions"):
        collab.recommend_users(model, 5, exclude_seen=True)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no positive"):
        collab.train_bpr(pd.DataFrame({"user": [], "track": []}), 10, progress=False)
    with pytest.raises(ValueError, match="track ids"):
        collab.train_bpr(pd.DataFrame({"user": [1], "track": [10]}), 10, progress=False)


def test_user_recommendations_file_is_sorted_jsonl(tmp_path):
    path = collab.write_user_recommendations({7: [3, 1], 2: [np.int64(5)]}, tmp_path / "user_recs.json")
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [{"user": 2, "tracks": [5]}, {"user": 7, "tracks": [3, 1]}]
