"""The course's week-5 diverse item-to-item lists: for every track the collaborative model knows, its nearest tracks
by cosine similarity of the model's item factors, with at most `per_artist` tracks of any one artist in a list.

A track the model never saw (it has no factors) gets an empty list, so the service's Contextual recommender falls
back to a random track for it. A track is never its own neighbour. Ties go to the smaller track id, so the lists
depend on the factors alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from botify_lab.formats import atomic_write_bytes

BLOCK_ROWS = 1024


def cosine_scores(factors: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
    """Cosine similarity of the factors of `rows` (rows of the result) with every item (columns)."""
    factors = np.asarray(factors, dtype=np.float64)
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    unit = factors / np.where(norms > 0, norms, 1.0)
    return unit[rows] @ unit.T


def capped_top_k(order: np.ndarray, artists: np.ndarray, k: int, per_artist: int) -> list[int]:
    """The first k entries of `order` (item positions, best first) taking at most `per_artist` per artist."""
    taken: dict = {}
    chosen: list[int] = []
    for item in order:
        artist = artists[item]
        if taken.get(artist, 0) >= per_artist:
            continue
        taken[artist] = taken.get(artist, 0) + 1
        chosen.append(int(item))
        if len(chosen) == k:
            break
    return chosen


def diverse_neighbours(
    item_factors: np.ndarray, item_tracks: np.ndarray, track_artists: np.ndarray, k: int = 20, per_artist: int = 5
) -> dict[int, list[int]]:
    """Track id -> its up to k nearest track ids (cosine of the item factors, best first), at most `per_artist` of
    any one artist. `item_tracks[j]` is the track id of factor row j; `track_artists[t]` is the artist of track t
    (the catalog's column). A list is shorter than k only when the model knows too few tracks or artists."""
    if k < 1 or per_artist < 1:
        raise ValueError(f"k and per_artist must be at least 1, got {k}, {per_artist}")
    item_tracks = np.asarray(item_tracks, dtype=np.int64)
    artists = np.asarray(track_artists)[item_tracks]
    n_items = len(item_tracks)
    lists: dict[int, list[int]] = {}
    for start in range(0, n_items, BLOCK_ROWS):
        rows = np.arange(start, min(start + BLOCK_ROWS, n_items))
        scores = cosine_scores(item_factors, rows)
        scores[np.arange(len(rows)), rows] = -np.inf
        # best first, ties to the smaller track id (item rows are in ascending track order when built by collab)
        tie_break = np.broadcast_to(item_tracks, scores.shape)
        orders = np.lexsort((tie_break, -scores), axis=1)
        for row, order in zip(rows, orders):
            order = order[np.isfinite(scores[row - start, order])]
            lists[int(item_tracks[row])] = item_tracks[capped_top_k(order, artists, k, per_artist)].tolist()
    return lists


def catalog_lists(catalog_size: int, lists: dict[int, list[int]]) -> list[list[int]]:
    """One list per catalog track id (empty for tracks without one)."""
    return [lists.get(track, []) for track in range(catalog_size)]


def write_track_lists(catalog: pd.DataFrame, lists: dict[int, list[int]], out_path: Path | str) -> Path:
    """The service's track-recommendations file (catalog rows in catalog order + "recommendations"), JSONL,
    atomic; a track without a list gets `"recommendations": []` (the Contextual recommender then answers at random).

    Same format as `export.write_track_recommendations`, which needs a full k-wide row for every track.
    """
    size = len(catalog)
    if any(not 0 <= track < size for track in lists) or any(
        not 0 <= other < size for row in lists.values() for other in row
    ):
        raise ValueError(f"track ids must be catalog ids in [0, {size})")
    lines = [
        orjson.dumps(
            {"artist": artist, "title": title, "track": int(track), "recommendations": lists.get(int(track), [])}
        )
        for artist, title, track in zip(catalog["artist"], catalog["title"], catalog["track"])
    ]
    return atomic_write_bytes(out_path, b"\n".join(lines) + b"\n")


def distinct_artists(lists: dict[int, list[int]], track_artists: np.ndarray) -> pd.Series:
    """Per track with a non-empty list, how many distinct artists its list holds."""
    track_artists = np.asarray(track_artists)
    return pd.Series(
        {track: len(set(track_artists[row].tolist())) for track, row in lists.items() if row},
        name="distinct_artists",
        dtype=np.int64,
    )


def list_metrics(lists: dict[int, list[int]], track_artists: np.ndarray, catalog_size: int, k: int) -> dict:
    """Offline coverage of the lists: tracks with a list, distinct tracks recommended, full-length lists, the mean
    number of distinct artists per list and the share of slots taken by the list's own track's artist."""
    track_artists = np.asarray(track_artists)
    filled = {track: row for track, row in lists.items() if row}
    recommended = {other for row in filled.values() for other in row}
    slots = sum(len(row) for row in filled.values())
    same = sum(int(np.sum(track_artists[row] == track_artists[track])) for track, row in filled.items())
    artists = distinct_artists(filled, track_artists)
    return {
        "catalog_tracks": int(catalog_size),
        "tracks_with_list": len(filled),
        "tracks_with_list_share": round(len(filled) / catalog_size, 6),
        "full_lists": int(sum(len(row) == k for row in filled.values())),
        "coverage": len(recommended),
        "coverage_share": round(len(recommended) / catalog_size, 6),
        "mean_list_length": round(slots / len(filled), 6) if filled else 0.0,
        "mean_distinct_artists": round(float(artists.mean()), 6) if len(artists) else 0.0,
        "same_artist_share": round(same / slots, 6) if slots else 0.0,
    }
