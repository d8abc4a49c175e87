"""The course's TOP_POP experiment replayed in process, fast enough to search the world generator's knobs.

A day of Random traffic, the top tracks of that day by total listen time, then Random vs TopPop(10/100/1000)
analysed per user, exactly as the `calibrate` stage runs it through the real service; here the simulator's lock-step
engine plays batched recommenders, thousands of times faster than HTTP.

The in-process run equals the log analysis, not an approximation of it: every played track appears in the service's
log exactly once with its listen time (the /next rows carry the previous play, the /last row the final one), so a
session logs `steps + 1` rows and its total listen time is the episode's reward; per-user sums then go through
`ab.user_metrics` as a logged experiment would. Only the recommenders' random draws differ from the service's
(counter-based draws of the episode instead of the service's hash), which changes no distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
import pandas as pd

from botify_lab.formats import assign_arm, experiment_seed
from botify_lab.research import ab
from botify_lab.research.logs import top_tracks
from botify_lab.research.published import (
    EXPERIMENT,
    PUBLISHED_SESSIONS,
    TOP_POP_ARMS,
    Verdict,
    arm_means,
    compare,
    sessions_frame,
)
from sim import rng
from sim.agents import RandomRecommender
from sim.lockstep import run_lockstep
from sim.world import World


def traffic_seeds(seed: int) -> tuple[int, int]:
    """(seed of the day of Random traffic, seed of the experiment's traffic): two independent streams per seed."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    first, second = np.random.SeedSequence(seed).generate_state(2)
    return int(first), int(second)


class ArmsRecommender:
    """The service's experiment in process: each user's hashed arm picks Random or a random top-k track.

    `pools[i]` is arm i's candidate tracks, or None for a uniformly random catalog track. Draws come from the
    episode's own counter-based stream, so answers do not depend on batching.
    """

    def __init__(self, n_tracks: int, user_ids: np.ndarray, pools: Sequence[np.ndarray | None], experiment: str):
        if not 2 <= len(pools) <= 5:
            raise ValueError(f"an experiment has 2..5 arms, got {len(pools)}")
        for pool in pools:
            if pool is not None and (len(pool) == 0 or pool.min() < 0 or pool.max() >= n_tracks):
                raise ValueError("every top-k pool needs at least one track id inside the catalog")
        self.n_tracks = n_tracks
        self.pools = [None if pool is None else np.asarray(pool, dtype=np.int64) for pool in pools]
        user_ids = np.asarray(user_ids, dtype=np.int64)
        seed = experiment_seed(experiment)
        self._arm_by_user = {int(u): assign_arm(experiment, len(pools), int(u), seed=seed) for u in user_ids}

    def arm_of(self, users: np.ndarray) -> np.ndarray:
        return np.fromiter((self._arm_by_user[int(u)] for u in users), dtype=np.int64, count=len(users))

    def recommend_batch(self, users, tracks, times, keys: np.ndarray, steps: np.ndarray) -> np.ndarray:
        arms = self.arm_of(users)
        answers = np.empty(len(users), dtype=np.int64)
        for arm, pool in enumerate(self.pools):
            rows = np.flatnonzero(arms == arm)
            if len(rows) == 0:
                continue
            size = self.n_tracks if pool is None else len(pool)
            draws = rng.integer_array(keys[rows], rng.AGENT, steps[rows], size)
            answers[rows] = draws if pool is None else pool[draws]
        return answers


def random_day_top_tracks(world: World, seed: int, episodes: int) -> list[int]:
    """The course's top-tracks list: total listen time per track over a day of Random traffic, most popular first.

    Every play of the day appears once in the service's log with its time, so the plays of the simulator's trace
    are the log's (track, time) pairs; `top_tracks` ranks them exactly as the `toppop` stage does.
    """
    result = run_lockstep(world, RandomRecommender(world.n_tracks), seed, 0, np.arange(episodes), trace=True)
    plays = [orjson.loads(line) for chunk in result.trace for line in chunk.splitlines()]
    frame = pd.DataFrame({"track": [p["track"] for p in plays], "time": [p["time"] for p in plays]})
    return top_tracks(frame.dropna())


def replicate_top_pop(
    world: World,
    seed: int,
    *,
    episodes: int = PUBLISHED_SESSIONS,
    random_episodes: int = PUBLISHED_SESSIONS,
    arms: Sequence[tuple[str, str, int | None]] = TOP_POP_ARMS,
) -> pd.DataFrame:
    """One in-process replication: per-user metrics of the TOP_POP experiment for this seed."""
    traffic_seed, experiment_seed = traffic_seeds(seed)
    ranking = np.asarray(random_day_top_tracks(world, traffic_seed, random_episodes), dtype=np.int64)
    pools = [None if k is None else ranking[:k] for _, _, k in arms]
    recommender = ArmsRecommender(world.n_tracks, world.users.ids, pools, EXPERIMENT)
    result = run_lockstep(world, recommender, experiment_seed, 0, np.arange(episodes))
    arm_names = np.array([name for name, _, _ in arms], dtype=object)[recommender.arm_of(result.users)]
    sessions = sessions_frame(result.users, arm_names, result.steps, result.rewards)
    return ab.user_metrics(sessions, EXPERIMENT)


def evaluate_world(
    world: World,
    published: pd.DataFrame,
    seeds: Sequence[int],
    *,
    tolerances: dict[str, float],
    episodes: int = PUBLISHED_SESSIONS,
    random_episodes: int = PUBLISHED_SESSIONS,
) -> Verdict:
    """Replicate TOP_POP on this world once per seed and compare the seed-averaged arm means with the published."""
    means = [
        arm_means(replicate_top_pop(world, seed, episodes=episodes, random_episodes=random_episodes)) for seed in seeds
    ]
    return compare(means, published, tolerances)
