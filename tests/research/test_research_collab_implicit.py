"""The week-3 collaborative model (LightFM WARP or `implicit`): the course's filter and split, a tuned model that
finds taste groups, seeded determinism, and the user-recommendations file."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from botify_lab.research import collab

from .research_helpers import event, write_log


def two_taste_groups(users_per_group: int = 30, seed: int = 0) -> pd.DataFrame:
    """Even users like tracks 100..119, odd users 200..219; each user has 8 of theirs as positives."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(2 * users_per_group):
        liked = np.arange(20) + (200 if user % 2 else 100)
        for track in rng.choice(liked, size=8, replace=False):
            rows.append((user, int(track), 1))
    return pd.DataFrame(rows, columns=["user", "track", "count"])


def test_positive_interactions_keep_listens_above_the_threshold(tmp_path):
    rows = [
        event("next", 1, 1, 5, 1.0),
        event("next", 2, 1, 6, 0.8),
        event("next", 3, 1, 7, 0.81),
        event("last", 4, 1, 5, 0.9),
        event("last", 5, 2, 6, 0.95),
    ]
    write_log(tmp_path / "log" / "data.json", rows)
    from botify_lab.research import logs

    positives = collab.positive_interactions(logs.read_log(tmp_path / "log"))
    assert positives.values.tolist() == [[1, 5, 2], [1, 7, 1], [2, 6, 1]]


def test_min_positives_filter_counts_once_on_the_full_table():
    pairs = pd.DataFrame(
        [(1, t, 1) for t in (10, 11, 12)] + [(2, t, 1) for t in (10, 11)] + [(3, 10, 1)],
        columns=["user", "track", "count"],
    )
    kept = collab.filter_min_positives(pairs, min_user=2, min_track=2)
    # user 3 has one positive; track 12 has one user; counts come from the unfiltered table
    assert kept[["user", "track"]].values.tolist() == [[1, 10], [1, 11], [2, 10], [2, 11]]
    assert collab.filter_min_positives(pairs, 1, 1).shape[0] == 6


def test_split_is_seeded_and_near_the_share():
    pairs = two_taste_groups()
    train, test = collab.split_interactions(pairs, 0.3, seed=5)
    again_train, again_test = collab.split_interactions(pairs.sample(frac=1, random_state=1), 0.3, seed=5)
    assert train.equals(again_train) and test.equals(again_test)
    assert len(train) + len(test) == len(pairs)
    assert 0.2 < len(test) / len(pairs) < 0.4
    other_train, _ = collab.split_interactions(pairs, 0.3, seed=6)
    assert not train.equals(other_train)


@pytest.mark.parametrize(
    "algorithm,settings",
    [
        ("als", {"factors": 4, "regularization": 5.0, "iterations": 10, "alpha": 1.0}),
        ("bpr", {"factors": 8, "learning_rate": 0.05, "regularization": 0.001, "iterations": 200}),
        ("lightfm", {"factors": 8, "learning_rate": 0.05, "item_alpha": 1e-6, "user_alpha": 1e-6, "iterations": 30}),
    ],
)
def test_model_recommends_each_user_their_own_taste_group(algorithm, settings):
    train, test = collab.split_interactions(two_taste_groups(), 0.3, seed=0)
    data = collab.Interactions.from_pairs(train, test)
    model = collab.fit_model(data, algorithm, settings, seed=0, k=5, track_history=True)
    assert [row["epoch"] for row in model.history] == list(range(1, settings["iterations"] + 1))
    # a user has about 2.4 test tracks among the ~34 unseen: 0.07 at random, about 0.17 for a perfect in-group pick
    assert collab.heldout_precision(model.user_factors, model.item_factors, data, 5) > 0.1
    recommendations = collab.recommend_users(model, 10)
    assert sorted(recommendations) == list(range(60))
    for user, tracks in recommendations.items():
        in_group = sum((track >= 200) == bool(user % 2) for track in tracks)
        assert in_group >= 9, (user, tracks)


def test_tuning_and_fit_are_deterministic_for_a_seed():
    train, test = collab.split_interactions(two_taste_groups(), 0.3, seed=0)
    data = collab.Interactions.from_pairs(train, test)
    best, table = collab.tune(data, "als", 4, seed=11, k=5)
    again, table_again = collab.tune(data, "als", 4, seed=11, k=5)
    assert best == again and table.equals(table_again) and len(table) == 4
    assert set(best) == set(collab.SEARCH_SPACE["als"])
    first = collab.fit_model(data, "als", best, seed=11)
    second = collab.fit_model(data, "als", best, seed=11)
    assert np.array_equal(first.item_factors, second.item_factors)
    assert collab.recommend_users(first, 7) == collab.recommend_users(second, 7)
    other = collab.fit_model(data, "als", best, seed=12)
    assert not np.array_equal(first.item_factors, other.item_factors)


def test_lightfm_is_deterministic_and_ranks_as_its_own_predict():
    train, test = collab.split_interactions(two_taste_groups(), 0.3, seed=0)
    data = collab.Interactions.from_pairs(train, test)
    settings = {"factors": 6, "learning_rate": 0.05, "item_alpha": 1e-6, "user_alpha": 1e-6, "iterations": 5}
    first, second = (collab.fit_model(data, "lightfm", settings, seed=3) for _ in range(2))
    assert np.array_equal(first.item_factors, second.item_factors)
    assert first.item_factors.shape == (len(data.tracks), 6 + 2) and first.user_factors.shape == (len(data.users), 8)
    warp = collab._LightFMWarp(settings, 3)
    warp.fit(data.train.tocsr())
    predicted = warp.model.predict(
        np.repeat(np.arange(len(data.users)), len(data.tracks)), np.tile(np.arange(len(data.tracks)), len(data.users))
    )
    assert np.allclose(first.scores(), predicted.reshape(len(data.users), len(data.tracks)), atol=1e-5)
    assert np.array_equal(first.item_embeddings, np.asarray(warp.model.item_embeddings))
    bpr = collab.fit_model(data, "bpr", {"factors": 4, "learning_rate": 0.05, "regularization": 0.01, "iterations": 2})
    assert bpr.item_embeddings.shape[1] == bpr.item_factors.shape[1] - 1 and (bpr.user_factors[:, -1] == 1).all()
    best, table = collab.tune(data, "lightfm", 3, seed=11, k=5)
    assert set(best) == set(collab.SEARCH_SPACE["lightfm"]) and len(table) == 3


def test_model_round_trips_through_npz(tmp_path):
    data = collab.Interactions.from_pairs(two_taste_groups())
    model = collab.fit_model(data, "als", {"factors": 4, "regularization": 0.1, "iterations": 2}, seed=0)
    collab.save_model(model, tmp_path / "model.npz")
    loaded = collab.load_model(tmp_path / "model.npz")
    assert loaded.algorithm == "als"
    assert np.array_equal(loaded.tracks, model.tracks) and np.array_equal(loaded.item_factors, model.item_factors)


def test_bad_input_is_refused():
    empty = pd.DataFrame({"user": [], "track": [], "count": []})
    with pytest.raises(ValueError):
        collab.fit_model(
            collab.Interactions.from_pairs(empty), "als", {"factors": 2, "regularization": 0.1, "iterations": 1}
        )
    with pytest.raises(ValueError):
        collab.fit_model(collab.Interactions.from_pairs(two_taste_groups()), "warp", {})
    with pytest.raises(ValueError):
        collab.split_interactions(two_taste_groups(), 1.0)


def test_user_recommendations_file_is_sorted_jsonl(tmp_path):
    path = collab.write_user_recommendations({7: [3, 1], 2: [5]}, tmp_path / "recs.json")
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert lines == [{"user": 2, "tracks": [5]}, {"user": 7, "tracks": [3, 1]}]


def test_user_based_lists_by_hand():
    pairs = pd.DataFrame(
        [(1, 10), (1, 11), (2, 10), (2, 11), (2, 12), (3, 20), (3, 21), (4, 20), (5, 30)], columns=["user", "track"]
    )
    lists = collab.user_based_recommendations(pairs, n=5, neighbours=1)
    # 1's nearest is 2 (cos 2/sqrt(6)): 2's tracks 10, 11, 12; 2's nearest is 1: 10, 11; 3 <-> 4 share track 20
    assert lists[1] == [10, 11, 12]
    assert lists[2] == [10, 11]
    assert lists[3] == [20] and lists[4] == [20, 21]
    assert 5 not in lists  # nobody shares a track with user 5
    wide = collab.user_based_recommendations(pairs, n=2, neighbours=3)
    assert wide[1] == [10, 11] and len(wide[2]) == 2
