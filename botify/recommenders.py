"""The course's recommenders and the one registry of them (`RECOMMENDERS`) that config checks and the service use.

Each recommender picks with a caller-supplied uniform draw, so the service decides where randomness comes from (a
hash of seed, user, request count and request) and the choice is reproducible. Each also knows the distribution it
draws from: `distribution(user, track)` (track -> probability, for replaying it as a target policy) and
`propensity(user, track, served)` (the probability of the track it served, which every "next" log line carries).
A pick is `draw % n` of a 128-bit draw, uniform over n up to a bias of n / 2**128.

They keep this draw-taking interface rather than the one of classes of one's own (`botify.custom`): they read no
session, so serving them through it would only add a session record per request to the store, and their picks,
logs and speed stay exactly what they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from botify_lab.formats import uniform_over

from .catalog import Catalog, DataFileError, iter_data_lines

if TYPE_CHECKING:
    from .config import ArmConfig


class Random:
    """A uniformly random catalog track; also every other recommender's fallback."""

    def __init__(self, catalog: Catalog):
        self.size = len(catalog)

    def recommend(self, user: int, track: int, draw: int) -> int:
        return draw % self.size

    def propensity(self, user: int, track: int, served: int) -> float:
        return 1.0 / self.size

    def distribution(self, user: int, track: int) -> dict[int, float]:
        return dict.fromkeys(range(self.size), 1.0 / self.size)


class FromList:
    """A recommender that draws uniformly from the list `candidates(user, track)` names for the request, and from
    Random when that list is empty or missing; picking, propensity and distribution all follow from the list."""

    def __init__(self, catalog: Catalog):
        self.fallback = Random(catalog)

    def candidates(self, user: int, track: int) -> Sequence[int] | None:
        raise NotImplementedError

    def recommend(self, user: int, track: int, draw: int) -> int:
        tracks = self.candidates(user, track)
        return tracks[draw % len(tracks)] if tracks else self.fallback.recommend(user, track, draw)

    def propensity(self, user: int, track: int, served: int) -> float:
        tracks = self.candidates(user, track)
        return tracks.count(served) / len(tracks) if tracks else self.fallback.propensity(user, track, served)

    def distribution(self, user: int, track: int) -> dict[int, float]:
        tracks = self.candidates(user, track)
        return uniform_over(tracks) if tracks else self.fallback.distribution(user, track)


class TopPop(FromList):
    """A random track among the k most popular of a top-tracks file (one JSON list, most popular first)."""

    def __init__(self, catalog: Catalog, path: Path, k: int):
        super().__init__(catalog)
        try:
            values = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            raise DataFileError(f"cannot read top tracks {path}: {error}") from error
        self.top = catalog.track_ids(values, str(path))[:k]
        self.probability = uniform_over(self.top)  # one list for every request: its k-long count done once

    def candidates(self, user: int, track: int) -> Sequence[int]:
        return self.top

    def propensity(self, user: int, track: int, served: int) -> float:
        return self.probability.get(served, 0.0) if self.top else self.fallback.propensity(user, track, served)


class StickyArtist(FromList):
    """A random track by the artist of the last track."""

    def __init__(self, catalog: Catalog):
        super().__init__(catalog)
        self.artist_of_track = catalog.artist_of_track
        self.tracks_by_artist = catalog.tracks_by_artist

    def candidates(self, user: int, track: int) -> Sequence[int]:
        return self.tracks_by_artist[self.artist_of_track[track]]


class Indexed(FromList):
    """A random track from the user's precomputed list (JSONL {"user", "tracks"}); random for unknown users."""

    def __init__(self, catalog: Catalog, path: Path):
        super().__init__(catalog)
        self.tracks_by_user: dict[int, tuple[int, ...]] = {}
        for number, row in iter_data_lines(path):
            where = f"{path}:{number}"
            if not isinstance(row, dict) or type(row.get("user")) is not int:
                raise DataFileError(f'{where}: expected {{"user": int, "tracks": [int, ...]}}')
            self.tracks_by_user[row["user"]] = catalog.track_ids(row.get("tracks"), where)

    def candidates(self, user: int, track: int) -> Sequence[int] | None:
        return self.tracks_by_user.get(user)


class Contextual(FromList):
    """A random one of the last track's precomputed neighbours (tracks.json rows + "recommendations")."""

    def __init__(self, catalog: Catalog, path: Path):
        super().__init__(catalog)
        size = len(catalog)
        self.neighbours: list[tuple[int, ...]] = [()] * size
        for number, row in iter_data_lines(path):
            where = f"{path}:{number}"
            if not isinstance(row, dict) or type(row.get("track")) is not int or not 0 <= row["track"] < size:
                raise DataFileError(f"{where}: expected a catalog row with a track id in 0..{size - 1}")
            self.neighbours[row["track"]] = catalog.track_ids(row.get("recommendations"), where)

    def candidates(self, user: int, track: int) -> Sequence[int]:
        return self.neighbours[track]


class Exploring:
    """An arm's recommender that answers a fixed share of requests with Random instead (epsilon-greedy exploration).

    Exploration keeps a loop of retrained models seeing tracks its previous version never served: a model trained
    only on the log of its own recommendations can never learn about the rest of the catalog. The service's draw is
    uniform over 128 bits: its high 64 decide whether to explore, and both recommenders then pick with `draw % n`,
    i.e. mostly the low bits, so the decision and the pick are independent (up to a bias of n / 2**64).
    """

    def __init__(self, recommender, catalog: Catalog, share: float):
        self.recommender = recommender
        self.random = Random(catalog)
        # Integer threshold on the high 64 bits: explore exactly when (draw >> 64) < share * 2**64.
        self.threshold = math.ceil(share * 2**64)
        self.share = self.threshold / 2**64  # the exact probability of exploring

    def recommend(self, user: int, track: int, draw: int) -> int:
        if (draw >> 64) < self.threshold:
            return self.random.recommend(user, track, draw)
        return self.recommender.recommend(user, track, draw)

    def propensity(self, user: int, track: int, served: int) -> float:
        exploit = self.recommender.propensity(user, track, served)
        return self.share * self.random.propensity(user, track, served) + (1.0 - self.share) * exploit

    def distribution(self, user: int, track: int) -> dict[int, float]:
        mixed = {candidate: self.share * p for candidate, p in self.random.distribution(user, track).items()}
        for candidate, p in self.recommender.distribution(user, track).items():
            mixed[candidate] = mixed.get(candidate, 0.0) + (1.0 - self.share) * p
        return mixed


@dataclass(frozen=True)
class RecommenderKind:
    """How a config arm names a recommender: its class, and whether it reads a data `path` and takes `k`."""

    factory: Callable[..., object]
    needs_path: bool = False
    takes_k: bool = False


RECOMMENDERS: dict[str, RecommenderKind] = {
    "random": RecommenderKind(Random),
    "sticky_artist": RecommenderKind(StickyArtist),
    "toppop": RecommenderKind(TopPop, needs_path=True, takes_k=True),
    "indexed": RecommenderKind(Indexed, needs_path=True),
    "contextual": RecommenderKind(Contextual, needs_path=True),
}


def build_recommender(arm: ArmConfig, catalog: Catalog):
    """The recommender a (validated) arm names, built from the registry; wrapped in `Exploring` if it explores."""
    kind = RECOMMENDERS[arm.recommender]
    arguments = [catalog]
    if kind.needs_path:
        arguments.append(arm.path)
    if kind.takes_k:
        arguments.append(arm.k)
    recommender = kind.factory(*arguments)
    if arm.exploration > 0:
        return Exploring(recommender, catalog, arm.exploration)
    return recommender
