"""The draws every world source makes the same way: artists' catalog sizes, track popularity and the course's
users (interests, consume bias and sharpness). The tree generator (`sim.generator`) and the listening source
(`sim.listening`) both build on them, so their catalogs and audiences follow the same knobs.
"""

from __future__ import annotations

import numpy as np

# Parts of the seed: each part of a world is drawn from its own `sub_generator(seed, part)`, so changing how one
# part is drawn leaves the others' numbers intact. Sources add their own parts from 10 up.
STRUCTURE, EMBEDDING, POPULARITY, NAMES, USERS = range(5)


def sub_generator(seed: int, part: int) -> np.random.Generator:
    return np.random.default_rng([seed, part])


def artist_size_pmf(mu: float, sigma: float, largest: int) -> np.ndarray:
    """P(size = 1..largest) of ceil(X), X ~ lognormal(mu, sigma), truncated at `largest` and renormalised."""
    from math import erf, log, sqrt

    edges = np.array(
        [
            0.5 * (1.0 + erf((log(k) - mu) / (sigma * sqrt(2.0)))) if sigma > 0 else float(log(k) >= mu)
            for k in range(1, largest + 1)
        ]
    )
    pmf = np.diff(np.r_[0.0, edges])
    if pmf.sum() <= 0:
        pmf = np.zeros(largest)
        pmf[-1] = 1.0
    return pmf / pmf.sum()


def draw_artist_sizes(rng: np.random.Generator, n_tracks: int, mu: float, sigma: float, largest: int) -> np.ndarray:
    """Artists' catalog sizes drawn one by one from the truncated ceil-lognormal until they hold every track (the
    last artist gets what is left), so the number of artists follows from the size distribution."""
    pmf = artist_size_pmf(mu, sigma, largest)
    mean = float((np.arange(1, largest + 1) * pmf).sum())
    sizes = np.zeros(0, dtype=np.int64)
    while sizes.sum() < n_tracks:
        more = int(max(16, 1.2 * (n_tracks - sizes.sum()) / mean))
        sizes = np.concatenate([sizes, 1 + rng.choice(largest, size=more, p=pmf)])
    total = np.cumsum(sizes)
    count = int(np.searchsorted(total, n_tracks) + 1)
    sizes = sizes[:count].copy()
    sizes[-1] -= int(total[count - 1] - n_tracks)
    return sizes


def draw_interests(rng: np.random.Generator, popularity: np.ndarray, n_users: int, per_user: int) -> np.ndarray:
    """Distinct interests per user, proportional to popularity (rows with a repeat are redrawn)."""
    per_user = min(per_user, len(popularity))
    interests = rng.choice(len(popularity), size=(n_users, per_user), p=popularity)
    while True:
        ordered = np.sort(interests, axis=1)
        repeated = np.nonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))[0]
        if len(repeated) == 0:
            return interests
        interests[repeated] = rng.choice(len(popularity), size=(len(repeated), per_user), p=popularity)


def draw_log_popularity(
    rng: np.random.Generator, track_artist: np.ndarray, n_artists: int, settings: dict
) -> np.ndarray:
    """Log popularity of each track: artist popularity times track popularity, both lognormal."""
    artist_popularity = rng.lognormal(0.0, settings["artist_popularity_sigma"], size=n_artists)
    track_popularity = rng.lognormal(0.0, settings["track_popularity_sigma"], size=len(track_artist))
    return np.log(artist_popularity[track_artist] * track_popularity)


def course_users(rng: np.random.Generator, interest_weights: np.ndarray, n_users: int, per_user: int) -> dict:
    """The course's users: `per_user` distinct interests drawn in proportion to `interest_weights`, consume_bias
    U(0, 10), consume_sharpness U(1, 2) to the power +-1."""
    interests = draw_interests(rng, interest_weights / interest_weights.sum(), n_users, per_user)
    consume_bias = rng.uniform(0.0, 10.0, size=n_users)
    sharpness_base = rng.uniform(1.0, 2.0, size=n_users)
    sharpness_sign = rng.choice(np.array([-1.0, 1.0]), size=n_users)
    return {"interests": interests, "consume_bias": consume_bias, "consume_sharpness": sharpness_base**sharpness_sign}
