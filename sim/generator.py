"""Generating a world folder: a plausible music catalog, its hidden embeddings and the simulated users.

The generator builds the structure a music catalog has, so that the course's recommenders behave as they did in
the course's real world (fitted to its real event logs, `botify_lab.tools.world_search`): genres split into
styles, artists belong to a style and have the course catalog's skewed sizes (most artists have one track, a few
dozens), an artist's tracks sit close together far from the origin (so a listener who likes one track of an artist
loves the others: StickyArtist saturates), and a random track scores widely around the listener's bias (listening
is all-or-nothing). Track popularity is skewed (artist popularity times track popularity, both lognormal); popular
tracks lean towards one shared "mainstream" direction and the rest lean away from it, and interests follow
popularity, so popular tracks are liked more broadly: that is what lets TopPop beat Random, as in the course's
published A/B test. `course_world` puts the same embeddings under the course's own catalog and users.

Every knob must be given: their values live in `params.yaml`'s `world:` section (`python -m sim world` reads it),
and this module only knows what each knob means.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import orjson

from sim.draws import (
    EMBEDDING,
    POPULARITY,
    STRUCTURE,
    USERS,
    course_users,
    draw_artist_sizes,
    draw_interests,
    draw_log_popularity,
    sub_generator,
)
from sim.settings import INTEGER_KNOBS, KNOB_KINDS, KNOBS, kind_type
from sim.world_files import npy_bytes, write_world, write_world_files

# Written into world.json as it always was, so the files of a world (and data.dvc's hash) do not depend on where
# the generator's code lives.
GENERATOR_NAME = "sim.world.generate_world"


def knob_settings(knobs: dict) -> dict:
    """Every knob, in world.json's order and with its JSON number type; an error names missing or unknown ones."""
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise TypeError(f"unknown world knobs: {unknown}; known: {sorted(KNOBS)}")
    missing = [name for name in KNOBS if name not in knobs]
    if missing:
        raise TypeError(f"missing world knobs: {missing} (params.yaml's world: section lists every knob)")
    settings = {}
    for name in KNOBS:
        value = knobs[name]
        if name in INTEGER_KNOBS and float(value) != int(value):
            raise ValueError(f"world knob {name} must be an integer, got {value!r}")
        settings[name] = kind_type(KNOB_KINDS[name])(value)
    return settings


def _directions(rng: np.random.Generator, count: int, dim: int, scale: float) -> np.ndarray:
    """Gaussian vectors whose norm is about `scale`."""
    return rng.standard_normal((count, dim)) * (scale / np.sqrt(dim))


def _checked(seed, n_tracks, n_users, dim, knobs: dict) -> tuple[int, int, int, int, dict]:
    settings = knob_settings(knobs)
    seed, n_tracks, n_users, dim = int(seed), int(n_tracks), int(n_users), int(dim)
    if n_tracks < 1 or n_users < 1 or dim < 1 or seed < 0:
        raise ValueError("n_tracks, n_users and dim must be positive and seed non-negative")
    if settings["genres"] < 1 or settings["styles_per_genre"] < 1 or settings["interests"] < 1:
        raise ValueError("genres, styles_per_genre and interests must be at least 1")
    if settings["artist_size_max"] < 1 or settings["artist_size_sigma"] < 0:
        raise ValueError("artist_size_max must be at least 1 and artist_size_sigma non-negative")
    return seed, n_tracks, n_users, dim, settings


def _artist_styles(rng: np.random.Generator, n_artists: int, settings: dict) -> np.ndarray:
    """Each artist's style: a genre (Zipf sizes), then one of its styles uniformly."""
    n_genres, per_genre = settings["genres"], settings["styles_per_genre"]
    genre_weights = 1.0 / np.arange(1, n_genres + 1) ** settings["genre_zipf"]
    artist_genre = rng.choice(n_genres, size=n_artists, p=genre_weights / genre_weights.sum())
    return artist_genre * per_genre + rng.integers(0, per_genre, size=n_artists)


def _embeddings(
    rng: np.random.Generator,
    track_artist: np.ndarray,
    artist_style: np.ndarray,
    log_popularity: np.ndarray,
    dim: int,
    settings: dict,
) -> np.ndarray:
    """Nested neighbourhoods (genre, style, artist, track) plus a popularity lean along one mainstream direction."""
    n_genres, per_genre = settings["genres"], settings["styles_per_genre"]
    spread = log_popularity.std()
    standardized = (log_popularity - log_popularity.mean()) / (spread if spread > 0 else 1.0)
    genre_centres = _directions(rng, n_genres, dim, settings["genre_spread"])
    style_centres = np.repeat(genre_centres, per_genre, axis=0) + _directions(
        rng, n_genres * per_genre, dim, settings["style_spread"]
    )
    artist_centres = style_centres[artist_style] + _directions(rng, len(artist_style), dim, settings["artist_spread"])
    mainstream = rng.standard_normal(dim)
    mainstream /= np.linalg.norm(mainstream)
    return (
        artist_centres[track_artist]
        + _directions(rng, len(track_artist), dim, settings["track_spread"])
        + settings["popularity_alignment"]
        * (standardized - settings["popularity_offset"])[:, None]
        * mainstream[None, :]
    ).astype(np.float32)


def world_arrays(*, seed: int, n_tracks: int, n_users: int, dim: int, **knobs) -> dict:
    """The world's numbers without its files: embeddings, artist per track, artist sizes, popularity, the users.

    `generate_world` writes exactly these (plus names and titles); the knob search uses them in memory.
    """
    seed, n_tracks, n_users, dim, settings = _checked(seed, n_tracks, n_users, dim, knobs)

    # Structure: genres -> styles -> artists (skewed sizes) -> tracks, ids shuffled so artists are not contiguous.
    structure = sub_generator(seed, STRUCTURE)
    sizes = draw_artist_sizes(
        structure, n_tracks, settings["artist_size_mu"], settings["artist_size_sigma"], settings["artist_size_max"]
    )
    artist_style = _artist_styles(structure, len(sizes), settings)
    track_artist = structure.permutation(np.repeat(np.arange(len(sizes)), sizes))
    log_popularity = draw_log_popularity(sub_generator(seed, POPULARITY), track_artist, len(sizes), settings)
    popularity = np.exp(log_popularity - log_popularity.max())
    popularity /= popularity.sum()
    embeddings = _embeddings(sub_generator(seed, EMBEDDING), track_artist, artist_style, log_popularity, dim, settings)
    n_genres, per_genre = settings["genres"], settings["styles_per_genre"]

    interest_weights = np.exp(settings["interest_popularity_exponent"] * (log_popularity - log_popularity.max()))
    return {
        "embeddings": embeddings,
        "track_artist": track_artist,
        "sizes": sizes,
        "popularity": popularity,
        **course_users(sub_generator(seed, USERS), interest_weights, n_users, settings["interests"]),
        "n_styles": n_genres * per_genre,
    }


def generate_world(out_dir: str | os.PathLike, *, seed: int, n_tracks: int, n_users: int, dim: int, **knobs) -> dict:
    """Write a world into `out_dir` and return the content of its `world.json`; every knob of `KNOBS` is required.

    Same arguments give byte-identical files. Each file is written to a temporary name and renamed into place, and
    `world.json` (holding the data files' hashes) comes last, so a failure never leaves a world that looks complete.
    """
    seed, n_tracks, n_users, dim, settings = _checked(seed, n_tracks, n_users, dim, knobs)
    arrays = world_arrays(seed=seed, n_tracks=n_tracks, n_users=n_users, dim=dim, **settings)
    sizes, popularity = arrays["sizes"], arrays["popularity"]
    return write_world(
        out_dir,
        arrays,
        seed=seed,
        generator=GENERATOR_NAME,
        parameters={"seed": seed, "n_tracks": n_tracks, "n_users": n_users, "dim": dim, **settings},
        stats={
            "artists": len(sizes),
            "styles": arrays["n_styles"],
            "largest_artist_tracks": int(sizes.max()),
            "top_1pct_popularity_share": float(np.sort(popularity)[::-1][: max(1, n_tracks // 100)].sum()),
        },
    )


COURSE_GENERATOR_NAME = "sim.generator.course_world"
_TOP_CLASS = 4  # interest counts from here up form one class, ordered by count


def _match_interest_counts(
    rng: np.random.Generator, drawn: np.ndarray, counts: np.ndarray, n_users: int, per_user: int, settings: dict
) -> np.ndarray:
    """Log popularity for a catalog whose interest counts are given: as the generator couples them.

    The generator draws interests with weights popularity ** interest_popularity_exponent. Drawing synthetic users
    that way over the drawn popularity gives the generator's joint law of (interest count, popularity); each track
    of the catalog then takes a popularity from the synthetic tracks held as an interest as often (quantile matching
    within each count class; the top class is ordered by count), so the course's interests are as mainstream as
    generated interests would be.
    """
    weights = np.exp(settings["interest_popularity_exponent"] * (drawn - drawn.max()))
    synthetic = np.bincount(
        draw_interests(rng, weights / weights.sum(), n_users, per_user).ravel(), minlength=len(drawn)
    )
    result = np.empty_like(drawn)
    for k in range(_TOP_CLASS + 1):
        mine = np.flatnonzero(counts == k) if k < _TOP_CLASS else np.flatnonzero(counts >= k)
        if len(mine) == 0:
            continue
        pool = drawn[synthetic == k] if k < _TOP_CLASS else drawn[synthetic >= k]
        if len(pool) == 0:
            pool = drawn
        if k < _TOP_CLASS:
            mine = rng.permutation(mine)
            pool_sorted = np.sort(pool)
        else:  # most-held first, ties in a random order; the pool by synthetic count then popularity
            mine = mine[np.lexsort((rng.random(len(mine)), -counts[mine]))]
            held = synthetic[synthetic >= k]
            pool_sorted = pool[np.lexsort((-pool, -held))][::-1]
        quantiles = (np.arange(len(mine)) + 0.5) / len(mine)
        values = pool_sorted[np.minimum((quantiles * len(pool_sorted)).astype(np.int64), len(pool_sorted) - 1)]
        result[mine] = values[::-1] if k >= _TOP_CLASS else values[rng.permutation(len(values))]
    return result


def course_world(catalog_dir: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int, dim: int, **knobs) -> dict:
    """The course's world rebuilt: its own `tracks.json` and `users.json` (copied byte for byte from
    `catalog_dir`) with hidden embeddings from the fitted generator, so the course's track ids, artists and users
    play as they did. Returns world.json's content.

    The catalog fixes which tracks share an artist; artists get styles, popularity and embeddings as in
    `generate_world` (the artist-size knobs are not used: the catalog has its own sizes). The course's users keep
    their interests, consume_bias and consume_sharpness; since the generator's interests follow popularity, a track's
    popularity rank follows how many course users hold it as an interest (ties keep the generator's own order).
    """
    settings = knob_settings(knobs)
    seed, dim = int(seed), int(dim)
    if dim < 1 or seed < 0:
        raise ValueError("dim must be positive and seed non-negative")
    source = Path(catalog_dir)
    for name in ("tracks.json", "users.json"):
        if not (source / name).is_file():
            raise ValueError(f"{source / name} not found: the course catalog folder needs tracks.json and users.json")
    tracks_bytes = (source / "tracks.json").read_bytes()
    users_bytes = (source / "users.json").read_bytes()
    rows = [orjson.loads(line) for line in tracks_bytes.splitlines() if line.strip()]
    if [row.get("track") for row in rows] != list(range(len(rows))):
        raise ValueError(f"{source / 'tracks.json'}: track ids must be 0..N-1 in order")
    names: dict[str, int] = {}
    track_artist = np.array([names.setdefault(row["artist"], len(names)) for row in rows], dtype=np.int64)
    users = [orjson.loads(line) for line in users_bytes.splitlines() if line.strip()]
    counts = np.zeros(len(rows), dtype=np.int64)
    for user in users:
        interests = np.asarray(user["interests"], dtype=np.int64)
        if len(interests) and (interests.min() < 0 or interests.max() >= len(rows)):
            raise ValueError(f"user {user.get('user')} has an interest outside the catalog")
        np.add.at(counts, interests, 1)

    artist_style = _artist_styles(sub_generator(seed, STRUCTURE), len(names), settings)
    drawn = draw_log_popularity(sub_generator(seed, POPULARITY), track_artist, len(names), settings)
    log_popularity = _match_interest_counts(
        sub_generator(seed, USERS),
        drawn,
        counts,
        len(users),
        max(1, round(counts.sum() / max(1, len(users)))),
        settings,
    )
    embeddings = _embeddings(sub_generator(seed, EMBEDDING), track_artist, artist_style, log_popularity, dim, settings)

    payloads = {"tracks.json": tracks_bytes, "users.json": users_bytes, "tracks.npy": npy_bytes(embeddings)}
    return write_world_files(
        out_dir,
        payloads,
        generator=COURSE_GENERATOR_NAME,
        parameters={"seed": seed, "n_tracks": len(rows), "n_users": len(users), "dim": dim, **settings},
        stats={
            "artists": len(names),
            "largest_artist_tracks": int(np.bincount(track_artist).max()),
            "interest_tracks": int((counts > 0).sum()),
        },
    )
