"""The simulator's hidden world: generating a plausible music catalog and loading worlds (ours or the course's).

A world folder holds `tracks.json` (public catalog), `users.json` (simulated users), `tracks.npy` (hidden float32
track embeddings) and, for generated worlds, `world.json` (the generator's parameters and the files' sha256).

The generator builds the structure a music catalog has, so that the course's recommenders behave as they did:
genres split into styles, artists belong to a style and have skewed catalog sizes, an artist's tracks sit close to
the artist, artists close to their style. Track popularity is strongly skewed (artist popularity times track
popularity, both lognormal) and popular tracks lean towards one shared "mainstream" direction, so popular tracks are
liked more broadly: that is what lets TopPop beat Random, as in the course's published A/B test.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

DATA_FILES = ("tracks.json", "users.json", "tracks.npy")
FORMAT_VERSION = 1

# Spec section 2 defaults; a user's own value in users.json wins.
DEFAULT_INTEREST_NEIGHBOURS = 10
DEFAULT_CONSUME_BIAS = 5.0
DEFAULT_CONSUME_SHARPNESS = 1.0
DEFAULT_SESSION_BUDGET = 5
DEFAULT_ARTIST_DISCOUNT_GAMMA = 0.8

# Structure knobs of the generator, with the help text the CLI shows. The defaults are calibrated to the course's
# published TOP_POP table (issue 5: `make calibrate` shows the search, metrics/calibration.json the check).
KNOBS: dict[str, tuple[float | int, str]] = {
    "genres": (12, "number of genres"),
    "styles_per_genre": (8, "styles inside each genre"),
    "tracks_per_artist": (4.4, "mean catalog size of an artist (the course had 11,464 artists for 50,000 tracks)"),
    "artist_size_sigma": (1.2, "lognormal sigma of artist catalog-size weights (larger = more skewed)"),
    "genre_zipf": (0.8, "Zipf exponent of genre sizes"),
    "genre_spread": (1.9, "norm scale of genre centres"),
    "style_spread": (1.2, "norm scale of a style's offset from its genre"),
    "artist_spread": (1.0, "norm scale of an artist's offset from its style"),
    "track_spread": (0.5, "norm scale of a track's offset from its artist"),
    "artist_popularity_sigma": (1.5, "lognormal sigma of artist popularity"),
    "track_popularity_sigma": (1.0, "lognormal sigma of a track's popularity within its artist"),
    "popularity_alignment": (0.5, "shift along the shared mainstream direction per standard deviation of log popularity"),
    "interests": (3, "interests per user, drawn with probability proportional to track popularity"),
}

# Seeds of independent sub-generators, so that changing one part of the generator leaves the others' draws intact.
_STRUCTURE, _EMBEDDING, _POPULARITY, _NAMES, _USERS = range(5)


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
    meta: dict | None
    _neighbour_rows: np.ndarray | None = field(default=None, repr=False)
    _neighbour_table: np.ndarray | None = field(default=None, repr=False)

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
        if self._neighbour_rows is None or self._neighbour_rows[interest] < 0:
            self.prepare_neighbours(np.array([interest]))
        return self._neighbour_table[self._neighbour_rows[interest], :count]

    def neighbour_lists(self, interests: np.ndarray) -> np.ndarray:
        """One row per given interest: its nearest tracks, best first (as wide as the largest interest_neighbours)."""
        self.prepare_neighbours(interests)
        return self._neighbour_table[self._neighbour_rows[interests]]

    def prepare_neighbours(self, interests: np.ndarray) -> None:
        """Compute the nearest-neighbour lists of these interest tracks (once each; a run prepares what it needs).

        Only interests ever need neighbours, and a run's episodes fix their interests up front, so a short run
        pays for a few hundred lists instead of all of them.
        """
        if self._neighbour_rows is None:
            self._neighbour_rows = np.full(self.n_tracks, -1, dtype=np.int64)
            self._neighbour_table = np.empty((0, int(self.users.interest_neighbours.max())), dtype=np.int64)
        wanted = np.unique(np.asarray(interests, dtype=np.int64))
        missing = wanted[self._neighbour_rows[wanted] < 0]
        if len(missing) == 0:
            return
        width = self._neighbour_table.shape[1]
        self._neighbour_rows[missing] = len(self._neighbour_table) + np.arange(len(missing))
        self._neighbour_table = np.concatenate(
            [self._neighbour_table, nearest_by_inner_product(self.embeddings, missing, width)]
        )


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


# ---------------------------------------------------------------------------------------------------------------
# Generation


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


def _atomic_write(path: Path, payload: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def generate_world(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    n_tracks: int = 50_000,
    n_users: int = 10_000,
    dim: int = 32,
    **knobs,
) -> dict:
    """Write a world into `out_dir` and return the content of its `world.json`.

    Same arguments give byte-identical files. Each file is written to a temporary name and renamed into place, and
    `world.json` (holding the data files' hashes) comes last, so a failure never leaves a world that looks complete.
    """
    unknown = set(knobs) - set(KNOBS)
    if unknown:
        raise TypeError(f"unknown world knobs: {sorted(unknown)}; known: {sorted(KNOBS)}")
    settings = {name: knobs.get(name, default) for name, (default, _) in KNOBS.items()}
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
    n_genres, per_genre = int(settings["genres"]), int(settings["styles_per_genre"])
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
    interests = _draw_interests(users_rng, popularity, n_users, int(settings["interests"]))
    consume_bias = users_rng.uniform(0.0, 10.0, size=n_users)
    sharpness_base = users_rng.uniform(1.0, 2.0, size=n_users)
    sharpness_sign = users_rng.choice(np.array([-1.0, 1.0]), size=n_users)
    consume_sharpness = sharpness_base**sharpness_sign

    tracks_json = b"".join(
        orjson.dumps({"artist": artist_names[track_artist[i]], "title": titles[i], "track": i}) + b"\n"
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
        _atomic_write(out / name, payload)
    meta = {
        "format": FORMAT_VERSION,
        "generator": "sim.world.generate_world",
        "parameters": {"seed": seed, "n_tracks": n_tracks, "n_users": n_users, "dim": dim, **settings},
        "stats": {
            "artists": n_artists,
            "styles": n_genres * per_genre,
            "largest_artist_tracks": int(sizes.max()),
            "top_1pct_popularity_share": float(np.sort(popularity)[::-1][: max(1, n_tracks // 100)].sum()),
        },
        "files": {name: hashlib.sha256(payload).hexdigest() for name, payload in payloads.items()},
    }
    meta["content_sha256"] = _content_hash(meta["files"])
    _atomic_write(out / "world.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
    return meta


def _content_hash(file_hashes: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{name}:{file_hashes[name]}\n" for name in DATA_FILES).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise WorldError(f"missing {path.name} in {path.parent}")
    rows = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise WorldError(f"{path}:{number}: not valid JSON ({error})") from None
            if not isinstance(row, dict):
                raise WorldError(f"{path}:{number}: expected a JSON object per line")
            rows.append(row)
    return rows


def _load_catalog(path: Path) -> tuple[np.ndarray, list[str], list[str]]:
    rows = _read_jsonl(path)
    try:
        ids = np.array([row["track"] for row in rows], dtype=np.int64)
        artists = [str(row["artist"]) for row in rows]
        titles = [str(row["title"]) for row in rows]
    except KeyError as error:
        raise WorldError(f"{path}: every row needs 'artist', 'title' and 'track' (missing {error})") from None
    if len(ids) == 0 or not np.array_equal(np.sort(ids), np.arange(len(ids))):
        raise WorldError(f"{path}: track ids must be exactly 0..N-1 (N = {len(ids)} rows)")
    order = np.argsort(ids)
    artists = [artists[i] for i in order]
    titles = [titles[i] for i in order]
    names, track_artist = np.unique(np.array(artists, dtype=object), return_inverse=True)
    return track_artist.astype(np.int64), [str(n) for n in names], titles


def _load_users(path: Path, n_tracks: int) -> Users:
    rows = _read_jsonl(path)
    if not rows:
        raise WorldError(f"{path}: no users")
    ids, flat, offsets = [], [], [0]
    bias, sharpness, neighbours, budget, gamma = [], [], [], [], []
    for number, row in enumerate(rows, start=1):
        try:
            interests = [int(t) for t in row["interests"]]
            ids.append(int(row["user"]))
        except (KeyError, TypeError, ValueError):
            raise WorldError(f"{path}: user row {number} needs 'user' and a list of 'interests'") from None
        if not interests or min(interests) < 0 or max(interests) >= n_tracks:
            raise WorldError(f"{path}: user {row['user']} has interests outside the catalog 0..{n_tracks - 1}")
        flat.extend(interests)
        offsets.append(len(flat))
        bias.append(float(row.get("consume_bias", DEFAULT_CONSUME_BIAS)))
        sharpness.append(float(row.get("consume_sharpness", DEFAULT_CONSUME_SHARPNESS)))
        neighbours.append(int(row.get("interest_neighbours", DEFAULT_INTEREST_NEIGHBOURS)))
        budget.append(int(row.get("session_budget", DEFAULT_SESSION_BUDGET)))
        gamma.append(float(row.get("artist_discount_gamma", DEFAULT_ARTIST_DISCOUNT_GAMMA)))
        if not 1 <= neighbours[-1] <= n_tracks or budget[-1] < 1:
            raise WorldError(f"{path}: user {row['user']} needs 1 <= interest_neighbours <= {n_tracks}, budget >= 1")
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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_world(directory: str | os.PathLike, *, verify: bool = True) -> World:
    """Load a world folder: ours, or the course's files (`tracks.json`, `users.json`, any (N, D) `tracks.npy`).

    `world.json` is optional; when present and `verify` is true the data files must match its hashes, so a changed
    or half-copied world is caught before it produces numbers.
    """
    path = Path(directory)
    if not path.is_dir():
        raise WorldError(f"world folder {path} does not exist")
    meta = None
    if (path / "world.json").is_file():
        meta = orjson.loads((path / "world.json").read_bytes())
        if verify:
            for name, expected in meta.get("files", {}).items():
                if not (path / name).is_file():
                    raise WorldError(f"missing {name} in {path} (listed in world.json)")
                if _sha256_file(path / name) != expected:
                    raise WorldError(f"{path / name} does not match the sha256 in world.json: changed or incomplete")
    track_artist, artist_names, titles = _load_catalog(path / "tracks.json")
    n_tracks = len(titles)
    npy = path / "tracks.npy"
    if not npy.is_file():
        raise WorldError(f"missing tracks.npy in {path}: the hidden embeddings are needed to simulate users")
    try:
        embeddings = np.load(npy, allow_pickle=False)
    except ValueError as error:
        raise WorldError(f"{npy}: not a plain numeric .npy array ({error})") from None
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.number):
        raise WorldError(f"{npy}: expected a numeric (N, D) array, got shape {embeddings.shape} {embeddings.dtype}")
    if embeddings.shape[0] != n_tracks:
        raise WorldError(f"{npy} has {embeddings.shape[0]} rows but tracks.json has {n_tracks} tracks")
    users = _load_users(path / "users.json", n_tracks)
    return World(
        path=path,
        embeddings=np.ascontiguousarray(embeddings, dtype=np.float64),
        track_artist=track_artist,
        artist_names=artist_names,
        titles=titles,
        users=users,
        meta=meta,
    )
