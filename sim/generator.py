"""Generating a world folder: a plausible music catalog, its hidden embeddings and the simulated users.

The generator builds the structure a music catalog has, so that the course's recommenders behave as they did:
genres split into styles, artists belong to a style and have skewed catalog sizes, an artist's tracks sit close to
the artist, artists close to their style. Track popularity is strongly skewed (artist popularity times track
popularity, both lognormal) and popular tracks lean towards one shared "mainstream" direction, so popular tracks are
liked more broadly: that is what lets TopPop beat Random, as in the course's published A/B test.

Every knob must be given: their values live in `params.yaml`'s `world:` section (`python -m sim world` reads it),
and this module only knows what each knob means.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import orjson

from botify_lab.formats import CATALOG_KEYS, atomic_write_bytes
from sim.world import DATA_FILES

FORMAT_VERSION = 1
# Written into world.json as it always was, so the files of a world (and data.dvc's hash) do not depend on where
# the generator's code lives.
GENERATOR_NAME = "sim.world.generate_world"

# The structure knobs in world.json's order, with the help text `python -m sim world --help` shows. Their values
# come from the caller (params.yaml's `world:` section); the knobs below are integers, the others floats.
KNOB_HELP: dict[str, str] = {
    "genres": "number of genres",
    "styles_per_genre": "styles inside each genre",
    "tracks_per_artist": "mean catalog size of an artist (the course had 11,464 artists for 50,000 tracks)",
    "artist_size_sigma": "lognormal sigma of artist catalog-size weights (larger = more skewed)",
    "genre_zipf": "Zipf exponent of genre sizes",
    "genre_spread": "norm scale of genre centres",
    "style_spread": "norm scale of a style's offset from its genre",
    "artist_spread": "norm scale of an artist's offset from its style",
    "track_spread": "norm scale of a track's offset from its artist",
    "artist_popularity_sigma": "lognormal sigma of artist popularity",
    "track_popularity_sigma": "lognormal sigma of a track's popularity within its artist",
    "popularity_alignment": "shift along the shared mainstream direction per standard deviation of log popularity",
    "interests": "interests per user, drawn with probability proportional to track popularity",
}
KNOBS: tuple[str, ...] = tuple(KNOB_HELP)
INTEGER_KNOBS = frozenset({"genres", "styles_per_genre", "interests"})


def knob_type(name: str) -> type:
    return int if name in INTEGER_KNOBS else float


# Seeds of independent sub-generators, so that changing one part of the generator leaves the others' draws intact.
_STRUCTURE, _EMBEDDING, _POPULARITY, _NAMES, _USERS = range(5)

_SYLLABLES = (
    "ka ri mo la ven tor sa mi lu na del ro be cal fin gar ho ja kel lin mar nor pe qui ras sel tan ul vi wen "
    "xa yor zan bri cor dra fel gro hal jor kra lom mur nev ost pra quen rin sto tre vol wyn zel"
).split()
_WORDS = (
    "love night heart fire river dream blue golden light shadow rain summer winter city road home moon sun star "
    "ocean wild silver broken dance sweet lonely midnight morning song blood stone glass paper electric velvet "
    "thunder echo mirror garden desert highway angel ghost crazy little last first lost forever tonight yesterday "
    "tomorrow heaven storm honey ice smoke wind kingdom tears fever candy rose black white red green empty falling "
    "rising running burning shining dancing waiting calling hold feel come back down away alone together again "
    "never always slow fast high low deep cold warm free young old secret hidden true wonder magic island "
    "train window letter diamond sugar spirit fortune velvet circus harbor neon satellite radio cinema"
).split()
_BAND_NOUNS = (
    "wolves lights kings rivers machines saints strangers ghosts birds engines shadows sparks comets tigers "
    "sailors pilots echoes giants dreamers rebels"
).split()


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
        settings[name] = knob_type(name)(value)
    return settings


def _word(rng: np.random.Generator, count: int, syllables: tuple[int, int]) -> list[str]:
    lengths = rng.integers(syllables[0], syllables[1] + 1, size=count)
    picks = rng.integers(0, len(_SYLLABLES), size=int(lengths.sum()))
    words, at = [], 0
    for length in lengths:
        words.append("".join(_SYLLABLES[i] for i in picks[at : at + length]).capitalize())
        at += length
    return words


def _artist_names(rng: np.random.Generator, count: int) -> list[str]:
    """Readable, distinct names: "First Last", "The <Adjective> <Nouns>", or one stage name."""
    kinds = rng.choice(3, size=count, p=[0.6, 0.25, 0.15])
    firsts, lasts, stage = _word(rng, count, (2, 3)), _word(rng, count, (2, 3)), _word(rng, count, (2, 4))
    adjectives = rng.integers(0, len(_WORDS), size=count)
    nouns = rng.integers(0, len(_BAND_NOUNS), size=count)
    names, seen = [], set()
    for i in range(count):
        if kinds[i] == 0:
            name = f"{firsts[i]} {lasts[i]}"
        elif kinds[i] == 1:
            name = f"The {_WORDS[adjectives[i]].capitalize()} {_BAND_NOUNS[nouns[i]].capitalize()}"
        else:
            name = stage[i]
        while name in seen:  # artists are told apart by name in the catalog, so names must be unique
            name = f"{name} {lasts[(i + len(seen)) % count]}"
        seen.add(name)
        names.append(name)
    return names


def _titles(rng: np.random.Generator, count: int) -> list[str]:
    lengths = rng.choice(np.array([1, 2, 3, 4]), size=count, p=[0.25, 0.4, 0.25, 0.1])
    picks = rng.integers(0, len(_WORDS), size=int(lengths.sum()))
    titles, at = [], 0
    for length in lengths:
        titles.append(" ".join(_WORDS[i] for i in picks[at : at + length]).title())
        at += length
    return titles


def _artist_sizes(rng: np.random.Generator, n_tracks: int, n_artists: int, sigma: float) -> np.ndarray:
    """Every artist has at least one track; the rest are spread by lognormal weights (a heavy-tailed catalog)."""
    weights = rng.lognormal(0.0, sigma, size=n_artists)
    return 1 + rng.multinomial(n_tracks - n_artists, weights / weights.sum())


def _directions(rng: np.random.Generator, count: int, dim: int, scale: float) -> np.ndarray:
    """Gaussian vectors whose norm is about `scale`."""
    return rng.standard_normal((count, dim)) * (scale / np.sqrt(dim))


def _draw_interests(rng: np.random.Generator, popularity: np.ndarray, n_users: int, per_user: int) -> np.ndarray:
    """Distinct interests per user, proportional to popularity (rows with a repeat are redrawn)."""
    per_user = min(per_user, len(popularity))
    interests = rng.choice(len(popularity), size=(n_users, per_user), p=popularity)
    while True:
        ordered = np.sort(interests, axis=1)
        repeated = np.nonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))[0]
        if len(repeated) == 0:
            return interests
        interests[repeated] = rng.choice(len(popularity), size=(len(repeated), per_user), p=popularity)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def content_hash(file_hashes: dict[str, str]) -> str:
    """One hash of a world's data files (world.json's `content_sha256`)."""
    return hashlib.sha256("".join(f"{name}:{file_hashes[name]}\n" for name in DATA_FILES).encode()).hexdigest()


def generate_world(out_dir: str | os.PathLike, *, seed: int, n_tracks: int, n_users: int, dim: int, **knobs) -> dict:
    """Write a world into `out_dir` and return the content of its `world.json`; every knob of `KNOBS` is required.

    Same arguments give byte-identical files. Each file is written to a temporary name and renamed into place, and
    `world.json` (holding the data files' hashes) comes last, so a failure never leaves a world that looks complete.
    """
    settings = knob_settings(knobs)
    seed, n_tracks, n_users, dim = int(seed), int(n_tracks), int(n_users), int(dim)
    if n_tracks < 1 or n_users < 1 or dim < 1 or seed < 0:
        raise ValueError("n_tracks, n_users and dim must be positive and seed non-negative")
    if settings["genres"] < 1 or settings["styles_per_genre"] < 1 or settings["interests"] < 1:
        raise ValueError("genres, styles_per_genre and interests must be at least 1")
    if settings["tracks_per_artist"] < 1:
        raise ValueError("tracks_per_artist must be at least 1")

    def child(part: int) -> np.random.Generator:
        return np.random.default_rng([seed, part])

    # Structure: genres -> styles -> artists (skewed sizes) -> tracks, ids shuffled so artists are not contiguous.
    structure = child(_STRUCTURE)
    n_genres, per_genre = settings["genres"], settings["styles_per_genre"]
    n_artists = int(min(n_tracks, max(1, round(n_tracks / settings["tracks_per_artist"]))))
    sizes = _artist_sizes(structure, n_tracks, n_artists, settings["artist_size_sigma"])
    genre_weights = 1.0 / np.arange(1, n_genres + 1) ** settings["genre_zipf"]
    artist_genre = structure.choice(n_genres, size=n_artists, p=genre_weights / genre_weights.sum())
    artist_style = artist_genre * per_genre + structure.integers(0, per_genre, size=n_artists)
    track_artist = structure.permutation(np.repeat(np.arange(n_artists), sizes))

    # Popularity: artist times track, both lognormal.
    popularity_rng = child(_POPULARITY)
    artist_popularity = popularity_rng.lognormal(0.0, settings["artist_popularity_sigma"], size=n_artists)
    track_popularity = popularity_rng.lognormal(0.0, settings["track_popularity_sigma"], size=n_tracks)
    log_popularity = np.log(artist_popularity[track_artist] * track_popularity)
    popularity = np.exp(log_popularity - log_popularity.max())
    popularity /= popularity.sum()
    spread = log_popularity.std()
    standardized = (log_popularity - log_popularity.mean()) / (spread if spread > 0 else 1.0)

    # Embeddings: nested neighbourhoods plus a popularity lean along one mainstream direction.
    embedding_rng = child(_EMBEDDING)
    genre_centres = _directions(embedding_rng, n_genres, dim, settings["genre_spread"])
    style_centres = np.repeat(genre_centres, per_genre, axis=0) + _directions(
        embedding_rng, n_genres * per_genre, dim, settings["style_spread"]
    )
    artist_centres = style_centres[artist_style] + _directions(embedding_rng, n_artists, dim, settings["artist_spread"])
    mainstream = embedding_rng.standard_normal(dim)
    mainstream /= np.linalg.norm(mainstream)
    embeddings = (
        artist_centres[track_artist]
        + _directions(embedding_rng, n_tracks, dim, settings["track_spread"])
        + settings["popularity_alignment"] * standardized[:, None] * mainstream[None, :]
    ).astype(np.float32)

    names_rng = child(_NAMES)
    artist_names = _artist_names(names_rng, n_artists)
    titles = _titles(names_rng, n_tracks)

    users_rng = child(_USERS)
    interests = _draw_interests(users_rng, popularity, n_users, settings["interests"])
    consume_bias = users_rng.uniform(0.0, 10.0, size=n_users)
    sharpness_base = users_rng.uniform(1.0, 2.0, size=n_users)
    sharpness_sign = users_rng.choice(np.array([-1.0, 1.0]), size=n_users)
    consume_sharpness = sharpness_base**sharpness_sign

    tracks_json = b"".join(
        orjson.dumps(dict(zip(CATALOG_KEYS, (artist_names[track_artist[i]], titles[i], i)))) + b"\n"
        for i in range(n_tracks)
    )
    users_json = b"".join(
        orjson.dumps(
            {
                "user": u,
                "interests": interests[u].tolist(),
                "consume_bias": float(consume_bias[u]),
                "consume_sharpness": float(consume_sharpness[u]),
            }
        )
        + b"\n"
        for u in range(n_users)
    )
    payloads = {"tracks.json": tracks_json, "users.json": users_json, "tracks.npy": _npy_bytes(embeddings)}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale_meta = out / "world.json"
    if stale_meta.exists():
        stale_meta.unlink()  # until the new data files are all in place, the folder must not claim to be complete
    for name, payload in payloads.items():
        atomic_write_bytes(out / name, payload)
    meta = {
        "format": FORMAT_VERSION,
        "generator": GENERATOR_NAME,
        "parameters": {"seed": seed, "n_tracks": n_tracks, "n_users": n_users, "dim": dim, **settings},
        "stats": {
            "artists": n_artists,
            "styles": n_genres * per_genre,
            "largest_artist_tracks": int(sizes.max()),
            "top_1pct_popularity_share": float(np.sort(popularity)[::-1][: max(1, n_tracks // 100)].sum()),
        },
        "files": {name: hashlib.sha256(payload).hexdigest() for name, payload in payloads.items()},
    }
    meta["content_sha256"] = content_hash(meta["files"])
    atomic_write_bytes(out / "world.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
    return meta
