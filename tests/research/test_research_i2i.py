"""Diverse item-to-item lists: nearest by cosine, the per-artist cap, tracks without factors, the service file."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from botify_lab.research import i2i


def catalog(artists: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"artist": artists, "title": [f"song {i}" for i in range(len(artists))], "track": range(len(artists))}
    )


def test_capped_top_k_by_hand():
    artists = np.array(["a", "a", "a", "b", "c", "a"])
    assert i2i.capped_top_k(np.array([0, 1, 2, 3, 4, 5]), artists, k=4, per_artist=2) == [0, 1, 3, 4]
    assert i2i.capped_top_k(np.array([0, 1, 2, 5]), artists, k=4, per_artist=2) == [0, 1]  # too few artists


def test_lists_are_nearest_first_capped_per_artist_and_skip_the_track_itself():
    # tracks 0..5 of artist "a" point almost the same way; 6 and 7 ("b", "c") a little further off
    factors = np.array(
        [[1.0, 0.0], [1.0, 0.01], [1.0, 0.02], [1.0, 0.03], [1.0, 0.04], [1.0, 0.05], [1.0, 0.5], [1.0, 0.6]]
    )
    artists = np.array(["a"] * 6 + ["b", "c"])
    tracks = np.arange(8)
    uncapped = i2i.diverse_neighbours(factors, tracks, artists, k=4, per_artist=4)
    assert uncapped[0] == [1, 2, 3, 4]
    capped = i2i.diverse_neighbours(factors, tracks, artists, k=4, per_artist=2)
    assert capped[0] == [1, 2, 6, 7]
    for track, row in capped.items():
        assert track not in row
        assert max(pd.Series(artists[row]).value_counts()) <= 2


def test_item_rows_map_to_track_ids_and_unknown_tracks_get_empty_lists(tmp_path):
    factors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    item_tracks = np.array([2, 5, 7])  # the model knows three tracks of an 8-track catalog
    table = catalog(["x", "y", "x", "y", "x", "y", "x", "y"])
    lists = i2i.diverse_neighbours(factors, item_tracks, table["artist"].to_numpy(), k=2, per_artist=1)
    # 2 is x, 5 and 7 are y: one track per artist, so 2 keeps only 5, while 5 and 7 take each other and 2
    assert lists == {2: [5], 5: [2, 7], 7: [5, 2]}
    path = i2i.write_track_lists(table, lists, tmp_path / "i2i.json")
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [row["track"] for row in rows] == list(range(8))
    assert rows[0] == {"artist": "x", "title": "song 0", "track": 0, "recommendations": []}
    assert rows[7]["recommendations"] == [5, 2]
    with pytest.raises(ValueError):
        i2i.write_track_lists(table, {2: [99]}, tmp_path / "bad.json")


def test_ties_go_to_the_smaller_track_id():
    factors = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    lists = i2i.diverse_neighbours(factors, np.arange(4), np.array(["a", "b", "c", "d"]), k=2, per_artist=1)
    assert lists == {0: [1, 2], 1: [0, 2], 2: [0, 1], 3: [0, 1]}


def test_list_metrics_by_hand():
    artists = np.array(["a", "a", "b", "c"])
    lists = {0: [1, 2], 1: [0, 3], 2: [0]}
    metrics = i2i.list_metrics(lists, artists, catalog_size=4, k=2)
    assert metrics["tracks_with_list"] == 3 and metrics["full_lists"] == 2
    assert metrics["coverage"] == 4 and metrics["coverage_share"] == 1.0
    assert metrics["mean_list_length"] == pytest.approx(5 / 3)
    assert metrics["mean_distinct_artists"] == pytest.approx((2 + 2 + 1) / 3)
    assert metrics["same_artist_share"] == pytest.approx(2 / 5)  # 0->1 and 1->0 share artist "a"
    assert i2i.distinct_artists(lists, artists).to_dict() == {0: 2, 1: 2, 2: 1}
