"""Lock-step engine: thousands of sessions advance one recommendation at a time as numpy array operations.

A Python loop per step tops out near 100k steps/s; a recommender with a `recommend_batch` method (the in-process
random recommender, for one) answers a whole batch at once, so here the rules of `sim.user` are applied to arrays,
the very functions `sim.user.Session` applies to one session. Each episode's outcome is therefore bit-identical to
`sim.episodes.play_episode` (tests/sim checks this episode by episode, trace line by trace line, and rule by rule
over random worlds and answers).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim import rng
from sim.agents import InvalidAnswer
from sim.episodes import Outcomes
from sim.user import (
    FIRST_TRACK_TIME,
    draw_first_track,
    draw_interest,
    draw_user,
    listen_times,
    playable,
    session_over,
    spends_budget,
    trace_line,
)
from sim.world import World

# Episodes advanced together: large enough to amortise numpy's per-call cost, small enough to bound memory.
CHUNK = 8192


def episode_starts(world: World, seed: int, day: int, episodes: np.ndarray):
    """(keys, user rows, interest tracks) of these episodes, exactly as `Session` draws them."""
    keys = rng.episode_keys(seed, day, episodes)
    user_rows = draw_user(world, keys)
    return keys, user_rows, draw_interest(world, user_rows, keys)


def run_lockstep(
    world: World, agent, seed: int, day: int, episodes: np.ndarray, *, strict: bool = False, trace: bool = False
) -> Outcomes:
    """Play these episodes of `day` together against `agent.recommend_batch`."""
    users = world.users
    n = len(episodes)
    keys, user_rows, interests = episode_starts(world, seed, day, episodes)
    first = draw_first_track(world, user_rows, interests, keys)

    user_ids = users.ids[user_rows]
    session_embeddings = world.embeddings[interests]
    bias, sharpness = users.consume_bias[user_rows], users.consume_sharpness[user_rows]
    gamma = users.artist_discount_gamma[user_rows]
    budget = users.session_budget[user_rows].copy()
    playbacks = Playbacks(world.track_artist, first)
    last_track, last_time = first.copy(), np.full(n, FIRST_TRACK_TIME)
    reward, steps, invalid = np.full(n, FIRST_TRACK_TIME), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    log = [(np.arange(n), np.zeros(n, dtype=np.int64), first, last_time.copy(), budget.copy())] if trace else None

    active = np.flatnonzero(~session_over(budget))
    while len(active):
        step = steps[active] + 1
        answers = np.asarray(
            agent.recommend_batch(user_ids[active], last_track[active], last_time[active], keys[active], step)
        )
        if answers.shape != active.shape or not np.issubdtype(answers.dtype, np.integer):
            raise TypeError("recommend_batch must return one integer track id per session")
        valid = playable(world, answers)
        if strict and not valid.all():
            where = active[np.argmin(valid)]
            raise InvalidAnswer(
                f"day {day} episode {episodes[where]}: answer {answers[np.argmin(valid)]} is outside the catalog"
            )
        time = np.zeros(len(active))  # an invalid answer plays nothing, as `Session.hear_nothing`
        chosen, tracks = active[valid], answers[valid]
        if len(chosen):
            fresh, same_artist = playbacks.recall_then_add(chosen, tracks)
            time[valid] = listen_times(
                world.embeddings,
                tracks,
                fresh,
                same_artist,
                session_embeddings[chosen],
                bias[chosen],
                sharpness[chosen],
                gamma[chosen],
            )
            last_track[chosen] = tracks
        invalid[active] += ~valid
        budget[active] -= spends_budget(keys[active], step, time)
        reward[active] += time
        last_time[active] = time
        steps[active] = step
        if trace:
            log.append((active, step, np.where(valid, answers, -1), time, budget[active].copy()))
        active = active[~session_over(budget[active])]

    trace_lines = _trace_lines(log, day, episodes, user_ids, interests) if trace else None
    return Outcomes(np.asarray(episodes, dtype=np.int64), user_ids, reward, steps, invalid, trace_lines)


class Playbacks:
    """Each session's playbacks so far, the first track and repeats included, invalid answers not: what the repeat
    rule and the per-artist count of `sim.user` look back on (`Session` keeps the same as a set and a counter).

    One row per session, padded with -1 and doubled in width when full, so a step costs a few array operations.
    """

    def __init__(self, track_artist: np.ndarray, first_tracks: np.ndarray):
        self.track_artist = track_artist
        capacity = 16
        self.tracks = np.full((len(first_tracks), capacity), -1, dtype=np.int64)
        self.artists = np.full((len(first_tracks), capacity), -1, dtype=np.int64)
        self.tracks[:, 0], self.artists[:, 0] = first_tracks, track_artist[first_tracks]
        self.length = np.ones(len(first_tracks), dtype=np.int64)

    def recall_then_add(self, rows: np.ndarray, tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each session's track is new to it and how many of its playbacks were by the track's artist; then
        the track is added to them."""
        width = int(self.length[rows].max())
        artists = self.track_artist[tracks]
        fresh = (self.tracks[rows, :width] != tracks[:, None]).all(axis=1)
        same_artist = (self.artists[rows, :width] == artists[:, None]).sum(axis=1)
        if width >= self.tracks.shape[1]:
            padding = np.full_like(self.tracks, -1)
            self.tracks, self.artists = np.hstack([self.tracks, padding]), np.hstack([self.artists, padding])
        slots = self.length[rows]
        self.tracks[rows, slots], self.artists[rows, slots] = tracks, artists
        self.length[rows] += 1
        return fresh, same_artist


def run_lockstep_in_chunks(
    world: World,
    agent,
    seed: int,
    day: int,
    episodes: np.ndarray,
    *,
    strict: bool,
    trace: bool,
    progress: Callable[[int], object],
) -> Outcomes:
    """`run_lockstep` over `CHUNK` episodes at a time, reporting progress after each chunk."""
    parts = []
    for start in range(0, len(episodes), CHUNK):
        chunk = episodes[start : start + CHUNK]
        parts.append(run_lockstep(world, agent, seed, day, chunk, strict=strict, trace=trace))
        progress(len(chunk))
    return Outcomes.merge(parts, trace)


def _trace_lines(log, day, episodes, user_ids, interests) -> list[bytes]:
    index, step, track, time, budget = (np.concatenate([entry[field] for entry in log]) for field in range(5))
    order = np.lexsort((step, index))
    per_episode: list[list[bytes]] = [[] for _ in range(len(episodes))]
    columns = (index[order], step[order], track[order], time[order], budget[order])
    for i, s, t, tm, b in zip(*(column.tolist() for column in columns)):
        per_episode[i].append(
            trace_line(day, int(episodes[i]), int(user_ids[i]), int(interests[i]), s, None if t < 0 else t, tm, b)
        )
    return [b"".join(lines) for lines in per_episode]
