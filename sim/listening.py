"""A world made the way the course made its own: hidden embeddings factorized from a listening history.

The course's `tracks.npy` holds the item factors of a LightFM WARP model (100 components, learning rate 0.01,
max_sampled 100, no item regularisation, biases dropped) fitted to real listening: the Million Song Dataset's Taste
Profile, its 50,000 most listened songs. In such factors a track's nearest tracks are the ones the same people
listen to, across artists, and norms grow with popularity. This generator draws a synthetic history shaped like a
music service's and factorizes it the same way:

- artists have the course catalog's skewed sizes (the `world:` section's artist-size knobs) and each belongs to one
  taste community (Zipf sizes); a track's popularity is artist popularity times track popularity (both lognormal);
- each listener holds 1 to `communities_per_listener` communities and a lognormal number of distinct songs, drawn
  by popularity within their communities, a `mainstream_share` of them from the whole catalog by popularity, and
  `artist_follow_songs` more songs of a `artist_follow_share` of the artists they heard;
- LightFM WARP factorizes the listener x song matrix on one thread (Hogwild threads would make the bytes depend on
  timing); the item factors times `scale` are the hidden embeddings.

Listeners differ in how mainstream they are (`mainstream_dispersion`, a Beta draw per listener): a share everyone
takes alike is what LightFM's item bias absorbs, while a share some listeners take far more than others becomes a
direction in the factors, along which popular songs meet the many interests that are popular songs themselves.

The course's fit saw about a thousand listeners per song, 100 epochs over about 48 million plays; this history has
far fewer. At the course's learning rate of 0.01 the factors stay far from converged (`unconverged` in
`fidelity_search.listening`, the first default): a community's songs point almost one way (an interest's tenth
most similar track at cosine 0.97) and differ mostly by norm, so an interest's ten largest inner products are its
community's few largest songs, sessions start on about 200 tracks' worth of variety (the real logs: 1,400 to 4,800)
and on an own interest in 0.5% of sessions (8 to 10%). At 0.1 the fit converges in a few epochs: every interest is
in its own ten and sessions start as variedly as the real logs'. The default (`dense history`: 30,000 listeners,
2 epochs at 0.1) is the search's candidate whose complete run passed the most fidelity checks (params.yaml's
`world:` comment and the README's "The world against the course's real logs" say how it was chosen).

The users keep the course's construction. Their interests are drawn among the tracks someone heard, in proportion
to listeners ** `interest_listen_exponent` times popularity ** `interest_popularity_exponent` (a track's
popularity: its artist's times its own, the weight listeners draw songs by). The course drew them by listen counts;
here following artists multiplies the listeners of a large artist's songs (a one-track artist's song has a quarter
to a sixth of another's listeners), so interests drawn by listeners fall on one-track artists' songs 3 to 5% of the
time, against 12% in the course's `users.json`, whose catalog (the most listened songs) held a one-track artist
only when its song was as popular as any. By popularity alone (`interest_listen_exponent` 0), 12%; sessions that
start there are what StickyArtist can only repeat (its zero listens).
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse

from sim.draws import POPULARITY, STRUCTURE, USERS, course_users, draw_artist_sizes, draw_log_popularity, sub_generator
from sim.settings import LISTENING_INTEGER_KNOBS, LISTENING_KNOBS
from sim.world_files import write_world

GENERATOR_NAME = "sim.listening.listening_world"

# The `world:` knobs this source shares with the tree generator (artist sizes, popularity, interests per user).
SHARED_KNOBS = (
    "artist_size_mu",
    "artist_size_sigma",
    "artist_size_max",
    "artist_popularity_sigma",
    "track_popularity_sigma",
    "interests",
)

# This source's own parts of the seed (`sim.draws` holds the shared ones: structure, popularity, users).
COMMUNITIES, HISTORY, FIT = 10, 11, 12


def listening_settings(knobs: dict) -> dict:
    """Every listening knob with its type; an error names missing or unknown ones."""
    unknown = sorted(set(knobs) - set(LISTENING_KNOBS))
    missing = [name for name in LISTENING_KNOBS if name not in knobs]
    if unknown or missing:
        raise TypeError(f"world.listening: unknown knobs {unknown}, missing knobs {missing}")
    settings = {}
    for name in LISTENING_KNOBS:
        value = knobs[name]
        if name in LISTENING_INTEGER_KNOBS:
            if float(value) != int(value) or int(value) < 1:
                raise ValueError(f"world.listening.{name} must be a positive integer, got {value!r}")
            settings[name] = int(value)
        else:
            settings[name] = float(value)
    if settings["songs_min"] > settings["songs_max"]:
        raise ValueError("world.listening.songs_min must not exceed songs_max")
    if settings["mainstream_dispersion"] >= 1.0:
        raise ValueError("world.listening.mainstream_dispersion must be below 1")
    for name in ("mainstream_share", "mainstream_dispersion", "artist_follow_share"):
        if not 0.0 <= settings[name] <= 1.0:
            raise ValueError(f"world.listening.{name} must be within [0, 1], got {settings[name]}")
    return settings


def _draw_by_weight(rng: np.random.Generator, cumulative: np.ndarray, low: np.ndarray, high: np.ndarray):
    """Indices into `cumulative`'s items, each drawn in proportion to weight within its [low, high) range of
    cumulative weight (`cumulative` is the running sum of the items' weights)."""
    targets = low + rng.random(len(low)) * (high - low)
    return np.minimum(np.searchsorted(cumulative, targets, side="right"), len(cumulative) - 1)


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2's np.unique hashes integers first, which took 5.3 s of the default world's
    history (three calls on about 5 million pair codes, nearly all distinct) against 0.3 s for a sort."""
    ordered = np.sort(values)
    distinct = np.ones(len(ordered), dtype=bool)
    distinct[1:] = ordered[1:] != ordered[:-1]
    return ordered[distinct]


def _grouped(groups: np.ndarray, weights: np.ndarray, n_groups: int):
    """Items sorted by group, their running weight, and each group's [low, high) range of it."""
    order = np.argsort(groups, kind="stable")
    cumulative = np.cumsum(weights[order])
    ends = np.searchsorted(groups[order], np.arange(n_groups), side="right")
    starts = np.r_[0, ends[:-1]]
    before = np.r_[0.0, cumulative]
    return order, cumulative, before[starts], before[ends]


def _mainstream_shares(rng: np.random.Generator, settings) -> np.ndarray:
    """Each listener's share of mainstream songs: `mainstream_share` for all, or with `mainstream_dispersion` a Beta
    draw of that mean (listeners differ in how mainstream they are, so the factors get a mainstream direction that
    a popularity bias alone cannot hold)."""
    share, dispersion = settings["mainstream_share"], settings["mainstream_dispersion"]
    if dispersion == 0.0 or share in (0.0, 1.0):
        return np.full(settings["listeners"], share)
    concentration = 1.0 / dispersion - 1.0
    return rng.beta(share * concentration, (1.0 - share) * concentration, size=settings["listeners"])


def listening_history(
    rng: np.random.Generator, track_artist: np.ndarray, artist_community: np.ndarray, weights: np.ndarray, settings
) -> tuple[np.ndarray, np.ndarray]:
    """(listener, track) pairs of distinct listens, sorted, drawn as the module docstring says."""
    n_listeners, n_communities = settings["listeners"], settings["communities"]
    community_weight = np.bincount(artist_community[track_artist], weights=weights, minlength=n_communities)
    held = rng.integers(1, settings["communities_per_listener"] + 1, size=n_listeners)
    community_share = community_weight / community_weight.sum()
    holdings = [
        rng.choice(n_communities, size=min(count, n_communities), replace=False, p=community_share) for count in held
    ]
    songs = np.exp(rng.normal(settings["songs_log_mean"], settings["songs_log_sigma"], size=n_listeners))
    songs = np.clip(np.round(songs), settings["songs_min"], settings["songs_max"]).astype(np.int64)
    listener = np.repeat(np.arange(n_listeners), songs)
    slot = rng.integers(0, np.repeat([len(h) for h in holdings], songs))
    flat = np.concatenate(holdings)
    offsets = np.r_[0, np.cumsum([len(h) for h in holdings])]
    community = flat[offsets[listener] + slot]

    by_community, cumulative, low, high = _grouped(artist_community[track_artist], weights, n_communities)
    track = by_community[_draw_by_weight(rng, cumulative, low[community], high[community])]
    listener_mainstream_share = _mainstream_shares(rng, settings)
    mainstream = rng.random(len(listener)) < listener_mainstream_share[listener]
    everywhere = np.cumsum(weights)
    track[mainstream] = _draw_by_weight(
        rng, everywhere, np.zeros(mainstream.sum()), np.full(mainstream.sum(), everywhere[-1])
    )
    n_tracks, n_artists = len(track_artist), int(track_artist.max()) + 1
    pairs = _sorted_distinct(listener * n_tracks + track)

    heard = _sorted_distinct((pairs // n_tracks) * n_artists + track_artist[pairs % n_tracks])
    followed = heard[rng.random(len(heard)) < settings["artist_follow_share"]]
    follower = np.repeat(followed // n_artists, settings["artist_follow_songs"])
    artist = np.repeat(followed % n_artists, settings["artist_follow_songs"])
    by_artist, cumulative, low, high = _grouped(track_artist, weights, n_artists)
    more = by_artist[_draw_by_weight(rng, cumulative, low[artist], high[artist])]
    pairs = _sorted_distinct(np.r_[pairs, follower * n_tracks + more])
    return pairs // n_tracks, pairs % n_tracks


def factorize(listeners: np.ndarray, tracks: np.ndarray, n_listeners: int, n_tracks: int, settings, seed) -> np.ndarray:
    """LightFM WARP item factors (no biases) of the binary listener x track matrix, on one thread."""
    from lightfm import LightFM

    matrix = scipy.sparse.coo_matrix(
        (np.ones(len(listeners), dtype=np.float32), (listeners, tracks)), shape=(n_listeners, n_tracks)
    )
    model = LightFM(
        no_components=settings["components"],
        loss="warp",
        learning_rate=settings["learning_rate"],
        max_sampled=settings["max_sampled"],
        random_state=np.random.RandomState(np.random.default_rng(seed).integers(2**31)),
    )
    model.fit(matrix, epochs=settings["epochs"], num_threads=1)
    return np.asarray(model.item_embeddings, dtype=np.float32)


def listening_world_arrays(*, seed: int, n_tracks: int, n_users: int, shared: dict, listening: dict) -> dict:
    """The listening world's numbers without its files (the keys `sim.generator.world_arrays` returns)."""
    settings = listening_settings(listening)

    structure = sub_generator(seed, STRUCTURE)
    sizes = draw_artist_sizes(
        structure, n_tracks, shared["artist_size_mu"], shared["artist_size_sigma"], shared["artist_size_max"]
    )
    track_artist = structure.permutation(np.repeat(np.arange(len(sizes)), sizes))
    log_popularity = draw_log_popularity(sub_generator(seed, POPULARITY), track_artist, len(sizes), shared)
    weights = np.exp(log_popularity - log_popularity.max())

    communities = sub_generator(seed, COMMUNITIES)
    zipf = 1.0 / np.arange(1, settings["communities"] + 1) ** settings["community_zipf"]
    artist_community = communities.choice(settings["communities"], size=len(sizes), p=zipf / zipf.sum())
    listeners, tracks = listening_history(
        sub_generator(seed, HISTORY), track_artist, artist_community, weights, settings
    )
    embeddings = settings["scale"] * factorize(
        listeners, tracks, settings["listeners"], n_tracks, settings, [seed, FIT]
    )
    listen_count = np.bincount(tracks, minlength=n_tracks).astype(np.float64)
    interest_weights = (
        listen_count ** settings["interest_listen_exponent"]
        * weights ** settings["interest_popularity_exponent"]
        * (listen_count > 0)
    )
    return {
        "embeddings": embeddings.astype(np.float32),
        "track_artist": track_artist,
        "sizes": sizes,
        "listen_count": listen_count,
        "artist_community": artist_community,
        **course_users(sub_generator(seed, USERS), interest_weights, n_users, shared["interests"]),
    }


def listening_world(
    out_dir: str | os.PathLike, *, seed: int, n_tracks: int, n_users: int, shared: dict, listening: dict
) -> dict:
    """Write the listening world into `out_dir` (byte-identical for the same arguments); return world.json's content.
    `shared` may hold more of the `world:` section: only `SHARED_KNOBS` are read."""
    shared = {name: shared[name] for name in SHARED_KNOBS}
    settings = listening_settings(listening)
    arrays = listening_world_arrays(seed=seed, n_tracks=n_tracks, n_users=n_users, shared=shared, listening=settings)
    counts = arrays["listen_count"]
    return write_world(
        out_dir,
        arrays,
        seed=seed,
        generator=GENERATOR_NAME,
        parameters={"seed": seed, "n_tracks": n_tracks, "n_users": n_users, **shared, "listening": settings},
        stats={
            "artists": len(arrays["sizes"]),
            "largest_artist_tracks": int(arrays["sizes"].max()),
            "listens": int(counts.sum()),
            "tracks_never_heard": int((counts == 0).sum()),
            "top_1pct_listen_share": float(np.sort(counts)[::-1][: max(1, n_tracks // 100)].sum() / counts.sum()),
        },
    )
