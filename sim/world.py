"""The simulator's hidden world in memory: the catalog's artists and titles, the hidden track embeddings, the users,
and the nearest-neighbour lists that start each session.

`sim.generator` writes world folders and `sim.loader` reads them into a `World`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The files of a world folder that hold its data; generated worlds add `world.json` with their sha256.
DATA_FILES = ("tracks.json", "users.json", "tracks.npy")


class WorldError(ValueError):
    """A world folder that cannot be used as it is; the message says which file and why."""


@dataclass(frozen=True)
class Users:
    """Per-user parameters as flat arrays; interests are ragged (offsets into one flat array)."""

    ids: np.ndarray
    interests: np.ndarray
    interest_offsets: np.ndarray
    consume_bias: np.ndarray
    consume_sharpness: np.ndarray
    interest_neighbours: np.ndarray
    session_budget: np.ndarray
    artist_discount_gamma: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def interests_of(self, index: int) -> np.ndarray:
        return self.interests[self.interest_offsets[index] : self.interest_offsets[index + 1]]


@dataclass
class World:
    path: Path | None
    embeddings: np.ndarray  # float64 copy of tracks.npy: every score is computed the same way in every code path
    track_artist: np.ndarray  # artist index per track
    artist_names: list[str]
    titles: list[str]
    users: Users
    meta: dict | None  # world.json's content, None for a folder without one
    _neighbours: NeighbourLists | None = field(default=None, repr=False)

    def with_gamma(self, gamma: float) -> World:
        """The same world (shared arrays and neighbour lists) with every user's artist discount at `gamma`."""
        users = dataclasses.replace(self.users, artist_discount_gamma=np.full(self.n_users, float(gamma)))
        return dataclasses.replace(self, users=users)

    @property
    def n_tracks(self) -> int:
        return self.embeddings.shape[0]

    @property
    def n_users(self) -> int:
        return len(self.users)

    def describe_track(self, track: int) -> str:
        return f"{track} {self.artist_names[self.track_artist[track]]} - {self.titles[track]}"

    def first_track_candidates(self, interest: int, count: int) -> np.ndarray:
        """The `count` tracks with the largest inner product with the interest (itself included), best first."""
        lists = self.neighbours
        if lists.rows[interest] < 0:  # every episode starts here: one lookup when the list exists
            lists.prepare(np.array([interest]))
        return lists.table[lists.rows[interest], :count]

    def neighbour_lists(self, interests: np.ndarray) -> np.ndarray:
        """One row per given interest: its nearest tracks, best first (as wide as the largest interest_neighbours)."""
        return self.neighbours.rows_of(interests)

    def prepare_neighbours(self, interests: np.ndarray) -> None:
        """Compute the nearest-neighbour lists of these interest tracks (once each; a run prepares what it needs).

        Only interests ever need neighbours, and a run's episodes fix their interests up front, so a short run
        pays for a few hundred lists instead of all of them.
        """
        self.neighbours.prepare(interests)

    @property
    def neighbours(self) -> NeighbourLists:
        if self._neighbours is None:
            self._neighbours = shared_neighbour_lists(self.embeddings, int(self.users.interest_neighbours.max()))
        return self._neighbours


class NeighbourLists:
    """Interest tracks' nearest tracks by inner product, each computed once: shared by every World over the same
    embeddings in a process (gamma twins, seeds, each run of a stage), since they depend on nothing else."""

    def __init__(self, embeddings: np.ndarray, width: int):
        self.embeddings = embeddings
        self.rows = np.full(len(embeddings), -1, dtype=np.int64)
        self.table = np.empty((0, width), dtype=np.int64)

    def prepare(self, interests: np.ndarray) -> None:
        wanted = np.unique(np.asarray(interests, dtype=np.int64))
        missing = wanted[self.rows[wanted] < 0]
        if len(missing) == 0:
            return
        computed = nearest_by_inner_product(self.embeddings, missing, self.table.shape[1])
        self.table = np.concatenate([self.table, computed])
        self.rows[missing] = len(self.table) - len(missing) + np.arange(len(missing))

    def rows_of(self, interests: np.ndarray) -> np.ndarray:
        self.prepare(interests)
        return self.table[self.rows[np.asarray(interests, dtype=np.int64)]]


# The few embeddings a process has loaded lately (a stage loads one world, sometimes twice): the key is their content.
_SHARED_NEIGHBOURS: OrderedDict[tuple, NeighbourLists] = OrderedDict()
SHARED_WORLDS = 4


def shared_neighbour_lists(embeddings: np.ndarray, width: int) -> NeighbourLists:
    key = (hashlib.sha256(np.ascontiguousarray(embeddings).data).digest(), embeddings.shape, width)
    if key not in _SHARED_NEIGHBOURS:
        _SHARED_NEIGHBOURS[key] = NeighbourLists(embeddings, width)
        while len(_SHARED_NEIGHBOURS) > SHARED_WORLDS:
            _SHARED_NEIGHBOURS.popitem(last=False)
    _SHARED_NEIGHBOURS.move_to_end(key)
    return _SHARED_NEIGHBOURS[key]


def nearest_by_inner_product(embeddings: np.ndarray, queries: np.ndarray, k: int, block: int = 128) -> np.ndarray:
    """Top-k tracks by float64 inner product for each query track, best first; ties go to the smaller track id.

    A full float64 partition per row is slow, so: score in float32 (half the memory traffic), split each row into
    k groups, and take the smallest group maximum as a floor that at least k tracks reach. Every true top-k track
    then scores at least `floor - 2 * error bound` in float32, so only those few candidates are rescored exactly in
    float64, pair by pair. The result is exact and independent of BLAS blocking, hence the same in every process.
    """
    n_tracks, dim = embeddings.shape
    k = min(k, n_tracks)
    group = n_tracks // k
    single = embeddings.astype(np.float32)
    norms = np.linalg.norm(embeddings, axis=1)
    # |float32 dot - exact dot| <= (D + 2) * 2**-24 * |a| |b| (input rounding plus summation in any order); doubled.
    slack = 2 * (dim + 2) * 2.0**-23 * norms * norms.max()
    table = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), block):
        rows = queries[start : start + block]
        scores = single[rows] @ single.T
        floor = scores[:, : k * group].reshape(len(rows), k, group).max(axis=2).min(axis=1)
        threshold = np.nextafter((floor - 2 * slack[rows]).astype(np.float32), np.float32(-np.inf))
        hits = np.flatnonzero(scores >= threshold[:, None])
        hit_rows, hit_cols = np.divmod(hits, n_tracks)
        exact = np.multiply(embeddings[rows[hit_rows]], embeddings[hit_cols]).sum(axis=1)
        order = np.lexsort((hit_cols, -exact, hit_rows))
        hit_rows, hit_cols = hit_rows[order], hit_cols[order]
        first_of_row = np.searchsorted(hit_rows, np.arange(len(rows)))
        rank = np.arange(len(hit_rows)) - first_of_row[hit_rows]
        keep = rank < k
        table[start + hit_rows[keep], rank[keep]] = hit_cols[keep]
    return table
