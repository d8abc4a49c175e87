"""The course's simulated user and listening session, rule by rule.

A session picks a user uniformly, one of their interests uniformly (its embedding `e` is the session's), and a first
track uniformly among the interest's `interest_neighbours` nearest tracks by inner product; that track plays for 1.0.
A recommended track r then plays for 0.0 if already played in the session, else for
`round(sigmoid((dot(emb[r], e) - consume_bias) * consume_sharpness) * artist_discount_gamma ** n, 2)`, n being how
many of the session's playbacks so far (the first track and repeats included) were by r's artist. After each
playback a uniform draw u in [0, 1) above the time costs one unit of `session_budget`; the session ends when the
budget reaches 0. A user's own value in users.json wins over the course's defaults (see `sim.loader`).

Every random choice of a session comes from the counter-based draws of its episode key (`sim.rng`), so a session
plays out the same wherever and whenever it runs. The listen-time arithmetic lives in one vectorized function used
by this scalar session and by the lock-step engine alike, so both give bit-identical times.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import orjson

from sim import rng
from sim.world import World

FIRST_TRACK_TIME = 1.0


def listen_times(
    embeddings: np.ndarray,
    tracks: np.ndarray,
    session_embeddings: np.ndarray,
    consume_bias: np.ndarray,
    consume_sharpness: np.ndarray,
    artist_discount_gamma: np.ndarray,
    same_artist_playbacks: np.ndarray,
) -> np.ndarray:
    """round(sigmoid((dot(emb[r], e) - bias) * sharpness) * gamma ** n, 2) for new (not repeated) tracks."""
    scores = np.multiply(embeddings[tracks], session_embeddings).sum(axis=1)
    with np.errstate(over="ignore"):  # exp overflow for very low scores gives 1/inf = 0.0, the right limit
        raw = 1.0 / (1.0 + np.exp(-(scores - consume_bias) * consume_sharpness))
    discount = np.power(artist_discount_gamma, same_artist_playbacks)
    return np.round(raw * discount, 2)


def draw_user(world: World, key: int) -> int:
    """Index (row in users.json) of the episode's user, uniform over all users."""
    return rng.integer(key, rng.USER, 0, world.n_users)


def draw_interest(world: World, user_index: int, key: int) -> int:
    interests = world.users.interests_of(user_index)
    return int(interests[rng.integer(key, rng.INTEREST, 0, len(interests))])


class Session:
    """One session: the first track, then one `listen` per recommendation until the budget is spent."""

    def __init__(self, world: World, key: int):
        users = world.users
        self.world = world
        self.key = key
        self.user_index = draw_user(world, key)
        self.user = int(users.ids[self.user_index])
        self.interest = draw_interest(world, self.user_index, key)
        candidates = world.first_track_candidates(self.interest, int(users.interest_neighbours[self.user_index]))
        first = int(candidates[rng.integer(key, rng.FIRST_TRACK, 0, len(candidates))])
        self._embedding = world.embeddings[self.interest][None, :]
        self._bias = users.consume_bias[self.user_index : self.user_index + 1]
        self._sharpness = users.consume_sharpness[self.user_index : self.user_index + 1]
        self._gamma = users.artist_discount_gamma[self.user_index : self.user_index + 1]
        self.budget = int(users.session_budget[self.user_index])
        self.step = 0
        self.last_track = first
        self.history: list[tuple[int | None, float]] = [(first, FIRST_TRACK_TIME)]  # None: an invalid answer
        self._played = {first}
        self._artist_playbacks = Counter({int(world.track_artist[first]): 1})

    @property
    def done(self) -> bool:
        return self.budget <= 0

    @property
    def last_time(self) -> float:
        return self.history[-1][1]

    @property
    def reward(self) -> float:
        """Total listen time of the session, the first track's 1.0 included."""
        return float(sum(time for _, time in self.history))

    def listen(self, track: int) -> float:
        """The user plays a recommended catalog track; returns its listen time."""
        if self.done:
            raise RuntimeError("the session is over")
        if not 0 <= track < self.world.n_tracks:
            raise ValueError(f"track {track} is outside the catalog 0..{self.world.n_tracks - 1}")
        artist = int(self.world.track_artist[track])
        if track in self._played:
            time = 0.0
        else:
            time = float(
                listen_times(
                    self.world.embeddings,
                    np.array([track]),
                    self._embedding,
                    self._bias,
                    self._sharpness,
                    self._gamma,
                    np.array([self._artist_playbacks[artist]]),
                )[0]
            )
        self._played.add(track)
        self._artist_playbacks[artist] += 1
        self.last_track = track
        self.history.append((track, time))
        self._spend_budget(time)
        return time

    def hear_nothing(self) -> float:
        """An invalid recommendation: nothing plays (time 0.0), and the budget rule applies as for any 0.0."""
        if self.done:
            raise RuntimeError("the session is over")
        self.history.append((None, 0.0))
        self._spend_budget(0.0)
        return 0.0

    def _spend_budget(self, time: float) -> None:
        self.step += 1
        if rng.uniform(self.key, rng.BUDGET, self.step) > time:
            self.budget -= 1


def trace_line(day: int, episode: int, user: int, interest: int, step: int, track, time: float, budget: int) -> bytes:
    """One playback as a JSON line; `track` is null when the recommender's answer was invalid."""
    return (
        orjson.dumps(
            {
                "day": day,
                "episode": episode,
                "user": user,
                "interest": interest,
                "step": step,
                "track": track,
                "time": time,
                "budget_left": budget,
            }
        )
        + b"\n"
    )
