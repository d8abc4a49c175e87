"""Lock-step engine: thousands of sessions advance one recommendation at a time as numpy array operations.

A Python loop per step tops out near 100k steps/s; a recommender with a `recommend_batch` method (the in-process
random recommender, for one) answers a whole batch at once, so here every rule of `sim.user.Session` is applied to
arrays instead. The draws are the same counter-based ones and the listen time is the same function, so each
episode's outcome is bit-identical to `sim.episodes.play_episode` (tests/sim checks this episode by episode, trace
line by trace line).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim import rng
from sim.agents import InvalidAnswer
from sim.episodes import Outcomes
from sim.user import FIRST_TRACK_TIME, listen_times, trace_line
from sim.world import World

# Episodes advanced together: large enough to amortise numpy's per-call cost, small enough to bound memory.
CHUNK = 8192


def episode_starts(world: World, seed: int, day: int, episodes: np.ndarray):
    """(keys, user rows, interest tracks) of these episodes, exactly as `Session` draws them."""
    users = world.users
    keys = rng.episode_keys(seed, day, episodes)
    user_rows = rng.integer_array(keys, rng.USER, 0, world.n_users)
    starts = users.interest_offsets[user_rows]
    counts = users.interest_offsets[user_rows + 1] - starts
    interests = users.interests[starts + rng.integer_array(keys, rng.INTEREST, 0, counts)]
    return keys, user_rows, interests


def run_lockstep(
    world: World, agent, seed: int, day: int, episodes: np.ndarray, *, strict: bool = False, trace: bool = False
) -> Outcomes:
    """Play these episodes of `day` together against `agent.recommend_batch`."""
    users = world.users
    n = len(episodes)
    keys, user_rows, interests = episode_starts(world, seed, day, episodes)
    counts = users.interest_neighbours[user_rows]
    first = world.neighbour_lists(interests)[np.arange(n), rng.integer_array(keys, rng.FIRST_TRACK, 0, counts)]

    user_ids = users.ids[user_rows]
    session_embeddings = world.embeddings[interests]
    bias, sharpness = users.consume_bias[user_rows], users.consume_sharpness[user_rows]
    gamma = users.artist_discount_gamma[user_rows]
    budget = users.session_budget[user_rows].copy()
    capacity = 16
    played = np.full((n, capacity), -1, dtype=np.int64)
    played_artists = np.full((n, capacity), -1, dtype=np.int64)
    played[:, 0], played_artists[:, 0] = first, world.track_artist[first]
    length = np.ones(n, dtype=np.int64)
    last_track, last_time = first.copy(), np.full(n, FIRST_TRACK_TIME)
    reward, steps, invalid = np.full(n, FIRST_TRACK_TIME), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    log = [(np.arange(n), np.zeros(n, dtype=np.int64), first, last_time.copy(), budget.copy())] if trace else None

    active = np.arange(n)
    while len(active):
        step = steps[active] + 1
        answers = np.asarray(
            agent.recommend_batch(user_ids[active], last_track[active], last_time[active], keys[active], step)
        )
        if answers.shape != active.shape or not np.issubdtype(answers.dtype, np.integer):
            raise TypeError("recommend_batch must return one integer track id per session")
        valid = (answers >= 0) & (answers < world.n_tracks)
        if strict and not valid.all():
            where = active[np.argmin(valid)]
            raise InvalidAnswer(
                f"day {day} episode {episodes[where]}: answer {answers[np.argmin(valid)]} is outside the catalog"
            )
        time = np.zeros(len(active))
        chosen, tracks = active[valid], answers[valid]
        if len(chosen):
            width = int(length[chosen].max())
            artists = world.track_artist[tracks]
            repeated = (played[chosen, :width] == tracks[:, None]).any(axis=1)
            same_artist = (played_artists[chosen, :width] == artists[:, None]).sum(axis=1)
            fresh = ~repeated
            fresh_rows = chosen[fresh]
            new_times = listen_times(
                world.embeddings,
                tracks[fresh],
                session_embeddings[fresh_rows],
                bias[fresh_rows],
                sharpness[fresh_rows],
                gamma[fresh_rows],
                same_artist[fresh],
            )
            chosen_time = np.zeros(len(chosen))
            chosen_time[fresh] = new_times
            time[valid] = chosen_time
            if width >= capacity:
                grow = np.full((n, capacity), -1, dtype=np.int64)
                played, played_artists = np.hstack([played, grow]), np.hstack([played_artists, grow])
                capacity *= 2
            slots = length[chosen]
            played[chosen, slots], played_artists[chosen, slots] = tracks, artists
            length[chosen] += 1
            last_track[chosen] = tracks
        invalid[active] += ~valid
        budget[active] -= rng.uniform_array(keys[active], rng.BUDGET, step) > time
        reward[active] += time
        last_time[active] = time
        steps[active] = step
        if trace:
            log.append((active, step, np.where(valid, answers, -1), time, budget[active].copy()))
        active = active[budget[active] > 0]

    trace_lines = _trace_lines(log, day, episodes, user_ids, interests) if trace else None
    return Outcomes(np.asarray(episodes, dtype=np.int64), user_ids, reward, steps, invalid, trace_lines)


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
