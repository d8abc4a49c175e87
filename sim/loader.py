"""Loading a world folder into a `World`: ours, or the course's files (`tracks.json`, `users.json`, `tracks.npy`).

The catalog is read through the project's shared catalog format (`botify_lab.formats`), the same definition the
service and the research code use. Every problem is a `WorldError` naming the file (and the line, for JSON Lines).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import orjson

from botify_lab.formats import iter_json_lines, read_catalog_rows
from sim.world import Users, World, WorldError

# The course's user model parameters, used when a users.json row does not set its own.
DEFAULT_INTEREST_NEIGHBOURS = 10
DEFAULT_CONSUME_BIAS = 5.0
DEFAULT_CONSUME_SHARPNESS = 1.0
DEFAULT_SESSION_BUDGET = 5
DEFAULT_ARTIST_DISCOUNT_GAMMA = 0.8


def _require(path: Path) -> Path:
    if not path.is_file():
        raise WorldError(f"missing {path.name} in {path.parent}")
    return path


def _load_catalog(path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """(artist index per track, artist names, titles), tracks in id order."""
    rows = read_catalog_rows(_require(path), WorldError)
    artists = np.array([row["artist"] for row in rows], dtype=object)
    names, track_artist = np.unique(artists, return_inverse=True)
    return track_artist.astype(np.int64), [str(name) for name in names], [row["title"] for row in rows]


def _load_users(path: Path, n_tracks: int) -> Users:
    ids, flat, offsets = [], [], [0]
    bias, sharpness, neighbours, budget, gamma = [], [], [], [], []
    for number, row in iter_json_lines(_require(path), WorldError):
        where = f"{path}:{number}"
        if not isinstance(row, dict):
            raise WorldError(f"{where}: expected a JSON object per line")
        try:
            interests = [int(t) for t in row["interests"]]
            ids.append(int(row["user"]))
        except (KeyError, TypeError, ValueError):
            raise WorldError(f"{where}: a user row needs 'user' and a list of 'interests'") from None
        if not interests or min(interests) < 0 or max(interests) >= n_tracks:
            raise WorldError(f"{where}: user {row['user']} has interests outside the catalog 0..{n_tracks - 1}")
        flat.extend(interests)
        offsets.append(len(flat))
        bias.append(float(row.get("consume_bias", DEFAULT_CONSUME_BIAS)))
        sharpness.append(float(row.get("consume_sharpness", DEFAULT_CONSUME_SHARPNESS)))
        neighbours.append(int(row.get("interest_neighbours", DEFAULT_INTEREST_NEIGHBOURS)))
        budget.append(int(row.get("session_budget", DEFAULT_SESSION_BUDGET)))
        gamma.append(float(row.get("artist_discount_gamma", DEFAULT_ARTIST_DISCOUNT_GAMMA)))
        if not 1 <= neighbours[-1] <= n_tracks or budget[-1] < 1:
            raise WorldError(f"{where}: user {row['user']} needs 1 <= interest_neighbours <= {n_tracks}, budget >= 1")
    if not ids:
        raise WorldError(f"{path}: no users")
    if len(set(ids)) != len(ids):
        raise WorldError(f"{path}: user ids are not unique")
    return Users(
        ids=np.array(ids, dtype=np.int64),
        interests=np.array(flat, dtype=np.int64),
        interest_offsets=np.array(offsets, dtype=np.int64),
        consume_bias=np.array(bias),
        consume_sharpness=np.array(sharpness),
        interest_neighbours=np.array(neighbours, dtype=np.int64),
        session_budget=np.array(budget, dtype=np.int64),
        artist_discount_gamma=np.array(gamma),
    )


def _load_embeddings(path: Path, n_tracks: int) -> np.ndarray:
    if not path.is_file():
        raise WorldError(f"missing tracks.npy in {path.parent}: the hidden embeddings are needed to simulate users")
    try:
        embeddings = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise WorldError(f"{path}: not a plain numeric .npy array ({error})") from None
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.number):
        raise WorldError(f"{path}: expected a numeric (N, D) array, got shape {embeddings.shape} {embeddings.dtype}")
    if embeddings.shape[0] != n_tracks:
        raise WorldError(f"{path} has {embeddings.shape[0]} rows but tracks.json has {n_tracks} tracks")
    return np.ascontiguousarray(embeddings, dtype=np.float64)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_meta(path: Path, verify: bool) -> dict | None:
    """world.json's content, None when absent; with `verify`, every listed file must match its sha256."""
    meta_path = path / "world.json"
    if not meta_path.is_file():
        return None
    try:
        meta = orjson.loads(meta_path.read_bytes())
    except orjson.JSONDecodeError as error:
        raise WorldError(f"{meta_path}: not valid JSON ({error})") from None
    if verify:
        for name, expected in meta.get("files", {}).items():
            if not (path / name).is_file():
                raise WorldError(f"missing {name} in {path} (listed in world.json)")
            if _sha256_file(path / name) != expected:
                raise WorldError(f"{path / name} does not match the sha256 in world.json: changed or incomplete")
    return meta


def load_world(directory: str | os.PathLike, *, verify: bool = True) -> World:
    """Load a world folder: ours, or the course's files (`tracks.json`, `users.json`, any (N, D) `tracks.npy`).

    `world.json` is optional; when present and `verify` is true the data files must match its hashes, so a changed
    or half-copied world is caught before it produces numbers.
    """
    path = Path(directory)
    if not path.is_dir():
        raise WorldError(f"world folder {path} does not exist")
    meta = _load_meta(path, verify)
    track_artist, artist_names, titles = _load_catalog(path / "tracks.json")
    embeddings = _load_embeddings(path / "tracks.npy", len(titles))
    return World(
        path=path,
        embeddings=embeddings,
        track_artist=track_artist,
        artist_names=artist_names,
        titles=titles,
        users=_load_users(path / "users.json", len(titles)),
        meta=meta,
    )


def world_from_arrays(
    arrays: dict,
    *,
    gamma: float = DEFAULT_ARTIST_DISCOUNT_GAMMA,
    interest_neighbours: int = DEFAULT_INTEREST_NEIGHBOURS,
    session_budget: int = DEFAULT_SESSION_BUDGET,
) -> World:
    """A world of the generator's arrays (no files: a calibration builds many), every user with the course's user
    model at `gamma`."""
    interests = np.asarray(arrays["interests"], dtype=np.int64)
    n_users, per_user = interests.shape
    users = Users(
        ids=np.arange(n_users, dtype=np.int64),
        interests=interests.ravel(),
        interest_offsets=np.arange(n_users + 1, dtype=np.int64) * per_user,
        consume_bias=np.asarray(arrays["consume_bias"], dtype=np.float64),
        consume_sharpness=np.asarray(arrays["consume_sharpness"], dtype=np.float64),
        interest_neighbours=np.full(n_users, interest_neighbours, dtype=np.int64),
        session_budget=np.full(n_users, session_budget, dtype=np.int64),
        artist_discount_gamma=np.full(n_users, float(gamma)),
    )
    return World(
        path=None,
        embeddings=np.asarray(arrays["embeddings"], dtype=np.float64),
        track_artist=np.asarray(arrays["track_artist"], dtype=np.int64),
        artist_names=[],
        titles=[],
        users=users,
        meta=None,
    )
