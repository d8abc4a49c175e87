"""Playing episodes one at a time, and the outcomes of a batch of episodes.

Episode `e` of day `d` draws everything from the counter-based key (seed, d, e), so its outcome depends only on the
recommender's answers, never on which process, thread or batch ran it. The same holds for the time at which each
request happens: an agent with an `at(day, episode, step)` method is told before each call, and one that logs time
turns that into milliseconds on its own `SimulatedClock`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sim import rng
from sim.agents import InvalidAnswer, validate_answer
from sim.user import Session, trace_line
from sim.world import World

SIMULATED_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: day 0 of every simulation
SESSION_SLOT_MS = 1_000  # each session owns one second; its requests are a millisecond apart


@dataclass(frozen=True)
class SimulatedClock:
    """When each request of a run happens: episodes of a day one after another, a second each, days in order.

    Times are strictly increasing in (day, episode, step) for sessions under 1,000 requests (later requests of a
    longer session share the slot's last millisecond), so sorting a service's log by (time, user) gives one order
    whatever the processes and connections did, and each user's requests stay in the order they were made.
    """

    episodes_per_day: int

    def time_ms(self, day: int, episode: int, step: int) -> int:
        slot = day * self.episodes_per_day + episode
        return SIMULATED_EPOCH_MS + slot * SESSION_SLOT_MS + min(step, SESSION_SLOT_MS - 1)


@dataclass
class Outcomes:
    """Outcomes of some episodes of one day, one entry per episode in episode order."""

    episodes: np.ndarray
    users: np.ndarray  # user ids (users.json's `user`)
    rewards: np.ndarray
    steps: np.ndarray
    invalid: np.ndarray
    trace: list[bytes] | None  # per episode, its trace lines in step order

    @staticmethod
    def merge(parts: list[Outcomes], trace: bool) -> Outcomes:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return Outcomes(empty, empty, np.zeros(0), empty, empty, [] if trace else None)
        episodes = np.concatenate([p.episodes for p in parts])
        order = np.argsort(episodes, kind="stable")
        lines = None
        if trace:
            flat = [line for p in parts for line in p.trace]
            lines = [flat[i] for i in order]
        return Outcomes(
            episodes[order],
            np.concatenate([p.users for p in parts])[order],
            np.concatenate([p.rewards for p in parts])[order],
            np.concatenate([p.steps for p in parts])[order],
            np.concatenate([p.invalid for p in parts])[order],
            lines,
        )


def play_episode(world: World, agent, seed: int, day: int, episode: int, *, strict: bool, trace: bool):
    """One session against `agent`: (reward, steps, invalid answers, trace bytes or None)."""
    session = Session(world, rng.episode_key(seed, day, episode))
    tell_time = getattr(agent, "at", None)
    user, interest = session.user, session.interest
    lines = [trace_line(day, episode, user, interest, 0, session.last_track, 1.0, session.budget)] if trace else None
    if hasattr(agent, "start_session"):
        agent.start_session(user, session.key)
    invalid = 0
    while not session.done:
        if tell_time is not None:
            tell_time(day, episode, session.step + 1)
        try:
            track = validate_answer(agent.recommend(user, session.last_track, session.last_time), world.n_tracks)
        except InvalidAnswer as error:
            if strict:
                raise InvalidAnswer(
                    f"day {day} episode {episode} user {user} step {session.step + 1}: {error}"
                ) from error
            invalid += 1
            session.hear_nothing()
            track = None
        else:
            session.listen(track)
        if trace:
            lines.append(
                trace_line(day, episode, user, interest, session.step, track, session.last_time, session.budget)
            )
    if hasattr(agent, "end_session"):
        if tell_time is not None:
            tell_time(day, episode, session.step + 1)
        try:
            agent.end_session(user, session.last_track, session.last_time)
        except InvalidAnswer as error:
            if strict:
                raise InvalidAnswer(f"day {day} episode {episode} user {user} /last: {error}") from error
            invalid += 1
    return session.reward, session.step, invalid, b"".join(lines) if trace else None


def outcomes_of(
    world: World, episodes: np.ndarray, user_rows: np.ndarray, played: list[tuple], trace: bool
) -> Outcomes:
    """Collect `play_episode` results (one per episode, same order) into `Outcomes`."""
    return Outcomes(
        np.asarray(episodes, dtype=np.int64),
        world.users.ids[np.asarray(user_rows, dtype=np.int64)],
        np.array([o[0] for o in played], dtype=np.float64),
        np.array([o[1] for o in played], dtype=np.int64),
        np.array([o[2] for o in played], dtype=np.int64),
        [o[3] for o in played] if trace else None,
    )


def play_in_order(
    world: World,
    agent,
    seed: int,
    day: int,
    episodes: np.ndarray,
    user_rows: np.ndarray,
    *,
    strict: bool,
    trace: bool,
    progress: Callable[[int], object],
) -> Outcomes:
    """The episodes one after the other, in the given order, against one recommender."""
    played = []
    for episode in episodes.tolist():
        played.append(play_episode(world, agent, seed, day, episode, strict=strict, trace=trace))
        progress(1)
    return outcomes_of(world, episodes, user_rows, played, trace)
