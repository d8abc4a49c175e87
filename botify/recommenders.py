"""The course's recommenders (spec 5). Each picks with a caller-supplied uniform draw, so the service decides
where randomness comes from (a hash of seed, user, request count and request) and the choice is reproducible."""
from __future__ import annotations

from pathlib import Path

import orjson

from .catalog import Catalog, DataFileError, iter_json_lines
from .config import ArmConfig


class Random:
    """A uniformly random catalog track; also every other recommender's fallback."""

    def __init__(self, catalog: Catalog):
        self.size = len(catalog)

    def recommend(self, user: int, track: int, draw: int) -> int:
        return draw % self.size


class TopPop:
    """A random track among the k most popular of a top-tracks file (one JSON list, most popular first)."""

    def __init__(self, catalog: Catalog, path: Path, k: int):
        try:
            values = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            raise DataFileError(f"cannot read top tracks {path}: {error}") from error
        self.top = catalog.track_ids(values, str(path))[:k]
        self.fallback = Random(catalog)

    def recommend(self, user: int, track: int, draw: int) -> int:
        if not self.top:
            return self.fallback.recommend(user, track, draw)
        return self.top[draw % len(self.top)]


class StickyArtist:
    """A random track by the artist of the last track."""

    def __init__(self, catalog: Catalog):
        self.artist_of_track = catalog.artist_of_track
        self.tracks_by_artist = catalog.tracks_by_artist

    def recommend(self, user: int, track: int, draw: int) -> int:
        tracks = self.tracks_by_artist[self.artist_of_track[track]]
        return tracks[draw % len(tracks)]


class Indexed:
    """A random track from the user's precomputed list (JSONL {"user", "tracks"}); random for unknown users."""

    def __init__(self, catalog: Catalog, path: Path):
        self.tracks_by_user: dict[int, tuple[int, ...]] = {}
        for number, row in iter_json_lines(path):
            where = f"{path}:{number}"
            if not isinstance(row, dict) or type(row.get("user")) is not int:
                raise DataFileError(f"{where}: expected {{\"user\": int, \"tracks\": [int, ...]}}")
            self.tracks_by_user[row["user"]] = catalog.track_ids(row.get("tracks"), where)
        self.fallback = Random(catalog)

    def recommend(self, user: int, track: int, draw: int) -> int:
        tracks = self.tracks_by_user.get(user)
        if not tracks:
            return self.fallback.recommend(user, track, draw)
        return tracks[draw % len(tracks)]


class Contextual:
    """A random one of the last track's precomputed neighbours (tracks.json rows + "recommendations")."""

    def __init__(self, catalog: Catalog, path: Path):
        size = len(catalog)
        self.neighbours: list[tuple[int, ...]] = [()] * size
        for number, row in iter_json_lines(path):
            where = f"{path}:{number}"
            if not isinstance(row, dict) or type(row.get("track")) is not int or not 0 <= row["track"] < size:
                raise DataFileError(f"{where}: expected a catalog row with a track id in 0..{size - 1}")
            self.neighbours[row["track"]] = catalog.track_ids(row.get("recommendations"), where)
        self.fallback = Random(catalog)

    def recommend(self, user: int, track: int, draw: int) -> int:
        neighbours = self.neighbours[track]
        if not neighbours:
            return self.fallback.recommend(user, track, draw)
        return neighbours[draw % len(neighbours)]


def build_recommender(arm: ArmConfig, catalog: Catalog):
    if arm.recommender == "random":
        return Random(catalog)
    if arm.recommender == "toppop":
        return TopPop(catalog, arm.path, arm.k)
    if arm.recommender == "sticky_artist":
        return StickyArtist(catalog)
    if arm.recommender == "indexed":
        return Indexed(catalog, arm.path)
    if arm.recommender == "contextual":
        return Contextual(catalog, arm.path)
    raise ValueError(f"unknown recommender {arm.recommender!r}")
