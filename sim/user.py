"""The course's simulated user and listening session, rule by rule.

A session picks a user uniformly, one of their interests uniformly (its embedding `e` is the session's), and a first
track uniformly among the interest's `interest_neighbours` nearest tracks by inner product; that track plays for 1.0.
A recommended track r then plays for 0.0 if already played in the session, else for
`round(sigmoid((dot(emb[r], e) - consume_bias) * consume_sharpness) * artist_discount_gamma ** n, 2)`, n being how
many of the session's playbacks so far (the first track and repeats included) were by r's artist. An answer outside
the catalog plays nothing (0.0) and is not a playback. After each answer a uniform draw u in [0, 1) above the time
costs one unit of `session_budget`; the session ends when the budget reaches 0. A user's own value in users.json
wins over the course's defaults (see `sim.loader`).

Every random choice of a session comes from the counter-based draws of its episode key (`sim.rng`), so a session
plays out the same wherever and whenever it runs. Each rule is written once, below, for one session (an int key,
scalars) or many (a uint64 array of keys, arrays): `Session` applies them to one session and `sim.lockstep` to
thousands at once, so both give bit-identical outcomes. Two things are written twice, because one version would slow
the other path down: the memory of a session's playbacks (behind the repeat rule and n), a set and a counter here and
padded arrays there, and the listen-time formula (`listen_times` for arrays, `listen_time` for one session without
numpy's Python-level wrappers); tests/sim/test_user_rules.py holds the two paths to the same results.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import orjson

from sim import rng
from sim.world import World

FIRST_TRACK_TIME = 1.0


def _draw_integer(key, stream: int, high):
    """rng's integer draw in [0, high) at step 0: Python's for one int key (fast), numpy's for an array of keys."""
    if isinstance(key, np.ndarray):
        return rng.integer_array(key, stream, 0, high)
    return rng.integer(key, stream, 0, int(high))


def draw_user(world: World, key):
    """Row in users.json of the episode's user, uniform over all users."""
    return _draw_integer(key, rng.USER, world.n_users)


def draw_interest(world: World, user_row, key):
    """The session's interest track, uniform among its user's interests."""
    offsets = world.users.interest_offsets
    start = offsets[user_row]
    return world.users.interests[start + _draw_integer(key, rng.INTEREST, offsets[user_row + 1] - start)]


def draw_first_track(world: World, user_row, interest, key):
    """The first track, uniform among the interest's `interest_neighbours` nearest tracks."""
    neighbours = world.users.interest_neighbours[user_row]
    rank = _draw_integer(key, rng.FIRST_TRACK, neighbours)
    if isinstance(key, np.ndarray):
        return world.neighbour_lists(interest)[np.arange(len(key)), rank]
    return world.first_track_candidates(interest, neighbours)[rank]


def playable(world: World, track):
    """Whether an answer is a catalog track id; any other answer plays nothing."""
    return (track >= 0) & (track < world.n_tracks)


def listen_times(
    embeddings: np.ndarray,
    tracks: np.ndarray,
    fresh: np.ndarray,
    same_artist_playbacks: np.ndarray,
    session_embeddings: np.ndarray,
    consume_bias: np.ndarray,
    consume_sharpness: np.ndarray,
    artist_discount_gamma: np.ndarray,
) -> np.ndarray:
    """round(sigmoid((dot(emb[r], e) - bias) * sharpness) * gamma ** n, 2) for a track new to the session (`fresh`),
    n being the session's earlier playbacks by r's artist; 0.0 for a track played before. For many sessions: arrays,
    one row of `session_embeddings` each (`listen_time` is one session's)."""
    scores = np.multiply(embeddings[tracks], session_embeddings).sum(axis=-1)
    with np.errstate(over="ignore"):  # exp overflow for very low scores gives 1/inf = 0.0, the right limit
        raw = 1.0 / (1.0 + np.exp(-(scores - consume_bias) * consume_sharpness))
    discount = np.power(artist_discount_gamma, same_artist_playbacks)
    # A repeat keeps the 0.0 it starts with; masking the product costs a session ~1 us less a listen than np.where.
    heard = np.multiply(raw, discount, out=np.zeros(len(raw)), where=fresh)
    return np.round(heard, 2)


def listen_time(
    embeddings: np.ndarray,
    track: int,
    fresh: bool,
    same_artist_playbacks: int,
    session_embedding: np.ndarray,
    consume_bias: float,
    consume_sharpness: float,
    artist_discount_gamma: float,
) -> float:
    """`listen_times` of one session, to the same bits (a listen 6.3 us against 12.5 us): the same ufuncs without
    numpy's Python-level wrappers (`sum`, `round`), and numpy's rounding (x * 100, rint, / 100) in Python floats,
    where `round` halves to even as `rint` does. An exponent past 700 would overflow `exp` (past 709.78) or give a
    sigmoid below 1e-304: either rounds to 0.0, so it returns 0.0 without asking numpy to silence the overflow."""
    if not fresh:
        return 0.0
    score = np.add.reduce(np.multiply(embeddings[track], session_embedding))
    exponent = -(score - consume_bias) * consume_sharpness
    if exponent > 700.0:
        return 0.0
    raw = 1.0 / (1.0 + np.exp(exponent))
    return round(float(raw * np.power(artist_discount_gamma, same_artist_playbacks)) * 100.0) / 100.0


def spends_budget(key, step, time):
    """Whether an answer costs a unit of budget: the step's uniform draw exceeds its listen time (chance 1 - time)."""
    if isinstance(key, np.ndarray):
        return rng.uniform_array(key, rng.BUDGET, step) > time
    return rng.uniform(key, rng.BUDGET, step) > time


def session_over(budget):
    """A session ends when its budget reaches 0."""
    return budget <= 0


class Session:
    """One session: the first track, then one `listen` per recommendation until the budget is spent."""

    def __init__(self, world: World, key: int):
        users = world.users
        self.world = world
        self.key = key
        self.user_index = draw_user(world, key)
        self.user = int(users.ids[self.user_index])
        self.interest = int(draw_interest(world, self.user_index, key))
        first = int(draw_first_track(world, self.user_index, self.interest, key))
        self._embedding = world.embeddings[self.interest]
        self._bias = users.consume_bias[self.user_index]
        self._sharpness = users.consume_sharpness[self.user_index]
        self._gamma = users.artist_discount_gamma[self.user_index]
        self.budget = int(users.session_budget[self.user_index])
        self.step = 0
        self.last_track = first
        self.reward = FIRST_TRACK_TIME  # total listen time, summed in the order the lock-step engine sums it
        self.history: list[tuple[int | None, float]] = [(first, FIRST_TRACK_TIME)]  # None: an invalid answer
        # Every playback so far, repeats included (`sim.lockstep.Playbacks` keeps the same as arrays).
        self._played = {first}
        self._artist_playbacks = Counter({int(world.track_artist[first]): 1})

    @property
    def done(self) -> bool:
        return session_over(self.budget)

    @property
    def last_time(self) -> float:
        return self.history[-1][1]

    def listen(self, track: int) -> float:
        """The user plays a recommended catalog track; returns its listen time."""
        if self.done:
            raise RuntimeError("the session is over")
        if not playable(self.world, track):
            raise ValueError(f"track {track} is outside the catalog 0..{self.world.n_tracks - 1}")
        artist = int(self.world.track_artist[track])
        time = listen_time(
            self.world.embeddings,
            track,
            track not in self._played,
            self._artist_playbacks[artist],
            self._embedding,
            self._bias,
            self._sharpness,
            self._gamma,
        )
        self._played.add(track)
        self._artist_playbacks[artist] += 1
        self.last_track = track
        self._record(track, time)
        return time

    def hear_nothing(self) -> float:
        """An invalid recommendation: nothing plays (time 0.0), and the budget rule applies as for any 0.0."""
        if self.done:
            raise RuntimeError("the session is over")
        self._record(None, 0.0)
        return 0.0

    def _record(self, track: int | None, time: float) -> None:
        """What every answer does, played or not: one more step, its time added, the budget rule applied."""
        self.history.append((track, time))
        self.reward += time
        self.step += 1
        self.budget -= spends_budget(self.key, self.step, time)


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
