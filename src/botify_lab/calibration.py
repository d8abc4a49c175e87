"""Issue 5: does a generated world react to the course's recommenders the way the course's real world did?

The only record of the real world is the published TOP_POP table (spec 8): a day of Random traffic, the top
tracks of that log by total listen time, then Random vs TopPop(10/100/1000) analysed per user (spec 7). This module
replicates that experiment in process (the simulator's lock-step engine with batched recommenders, thousands of
times faster than HTTP, so a search over world knobs is affordable) and scores a run against the published means.

The in-process run is exact, not an approximation of the analysis: every played track appears in the service's log
exactly once with its listen time (the /next rows carry the previous play, the /last row the final one), so a
session logs `steps + 1` rows and its total listen time is the episode's reward; per-user sums then go through
`botify_lab.ab.user_metrics` as a logged experiment would. Only the recommenders' random draws differ from the
service's (counter-based draws of the episode instead of the service's hash), which changes no distribution.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from botify.experiments import assign_arm
from botify_lab import ab
from botify_lab.logs import top_tracks
from sim import rng
from sim.agents import RandomRecommender
from sim.engine import run_lockstep
from sim.world import World

EXPERIMENT = "TOP_POP"
# The published arms in order: (arm, the course's label, k of TopPop or None for Random).
TOP_POP_ARMS: tuple[tuple[str, str, int | None], ...] = (
    ("C", "Random", None),
    ("T1", "TopPop(10)", 10),
    ("T2", "TopPop(100)", 100),
    ("T3", "TopPop(1000)", 1000),
)
# Issue 5's tolerance: relative distance from the published mean, per metric, for the seed-averaged mean.
TOLERANCES = {"mean_time_per_session": 0.10, "mean_tracks_per_session": 0.05}
CALIBRATED_METRICS = tuple(TOLERANCES)
REPORTED_METRICS = ("mean_time_per_session", "mean_tracks_per_session", "time", "sessions")
PUBLISHED_SESSIONS = 3700  # the published table's size: user-level `sessions` means times users
PUBLISHED_TABLE = Path(__file__).with_name("published_ab.csv")  # copy of ../shared/targets/published_ab.csv


def load_published(path: Path | str, experiment: str = EXPERIMENT) -> pd.DataFrame:
    """The published per-arm means of `experiment` as a frame (arm, recommender, metric, mean)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"published targets not found: {path}")
    table = pd.read_csv(path)
    needed = {"experiment", "arm", "recommender", "metric", "mean"}
    if not needed <= set(table.columns):
        raise ValueError(f"{path}: needs columns {sorted(needed)}, has {list(table.columns)}")
    rows = table[table["experiment"] == experiment]
    if rows.empty:
        raise ValueError(f"{path}: no rows for experiment {experiment!r}")
    return rows[["arm", "recommender", "metric", "mean"]].reset_index(drop=True)


def traffic_seeds(seed: int) -> tuple[int, int]:
    """(seed of the day of Random traffic, seed of the experiment's traffic): two independent streams per seed."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    first, second = np.random.SeedSequence(seed).generate_state(2)
    return int(first), int(second)


class ArmsRecommender:
    """The service's experiment in process: each user's hash arm (spec 4) picks Random or a random top-k track.

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
        self._arm_by_user = dict(zip(user_ids.tolist(), (assign_arm(experiment, len(pools), int(u)) for u in user_ids)))

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
    are the log's (track, time) pairs; `logs.top_tracks` ranks them exactly as the `toppop` stage does.
    """
    result = run_lockstep(world, RandomRecommender(world.n_tracks), seed, 0, np.arange(episodes), trace=True)
    plays = [orjson.loads(line) for chunk in result.trace for line in chunk.splitlines()]
    frame = pd.DataFrame({"track": [p["track"] for p in plays], "time": [p["time"] for p in plays]})
    return top_tracks(frame.dropna())


def sessions_frame(users: np.ndarray, arms: Sequence[str], steps: np.ndarray, rewards: np.ndarray,
                   experiment: str = EXPERIMENT) -> pd.DataFrame:
    """The sessions `logs.sessionize` would build from the service's log of these episodes (latency 0)."""
    return pd.DataFrame({
        "user": np.asarray(users, dtype=np.int64),
        experiment: np.asarray(arms, dtype=object),
        "tracks": np.asarray(steps, dtype=np.int64) + 1,  # one /next row per recommendation plus the /last row
        "time": np.asarray(rewards, dtype=np.float64),
        "latency": np.zeros(len(users)),
    })


def replicate_top_pop(world: World, seed: int, *, episodes: int = PUBLISHED_SESSIONS,
                      random_episodes: int = PUBLISHED_SESSIONS,
                      arms: Sequence[tuple[str, str, int | None]] = TOP_POP_ARMS) -> pd.DataFrame:
    """One in-process replication: per-user metrics (spec 7 step 3) of the TOP_POP experiment for this seed."""
    traffic_seed, experiment_seed = traffic_seeds(seed)
    ranking = np.asarray(random_day_top_tracks(world, traffic_seed, random_episodes), dtype=np.int64)
    pools = [None if k is None else ranking[:k] for _, _, k in arms]
    recommender = ArmsRecommender(world.n_tracks, world.users.ids, pools, EXPERIMENT)
    result = run_lockstep(world, recommender, experiment_seed, 0, np.arange(episodes))
    arm_names = np.array([name for name, _, _ in arms], dtype=object)[recommender.arm_of(result.users)]
    sessions = sessions_frame(result.users, arm_names, result.steps, result.rewards)
    return ab.user_metrics(sessions, EXPERIMENT)


def arm_means(user_metrics: pd.DataFrame, metrics: Sequence[str] = REPORTED_METRICS) -> pd.DataFrame:
    """Per arm (rows, natural order) the mean of each user-level metric (columns): the published table's cells."""
    means = user_metrics.groupby("arm")[list(metrics)].mean()
    return means.loc[ab.arm_order(means.index)]


@dataclass(frozen=True)
class Verdict:
    """How a world's seed-averaged TOP_POP means compare with the published ones."""

    table: pd.DataFrame  # arm, recommender, metric, published, simulated, ratio, seed_std, tolerance, within
    ordered: bool  # T2 above T1 and T3, every treatment above C, on mean_time_per_session
    within: bool  # every calibrated cell inside its tolerance

    @property
    def calibrated(self) -> bool:
        return self.ordered and self.within

    @property
    def worst(self) -> float:
        """Largest |ratio - 1| / tolerance over the calibrated cells: <= 1 means every cell is inside."""
        rows = self.table[self.table["tolerance"].notna()]
        return float(((rows["ratio"] - 1).abs() / rows["tolerance"]).max())


def within_tolerance(simulated: float, published: float, tolerance: float) -> bool:
    """|simulated / published - 1| <= tolerance (with a little slack for the float division)."""
    if published == 0 or not math.isfinite(simulated):
        return False
    return abs(simulated / published - 1.0) <= tolerance + 1e-12


def published_ordering(means: pd.Series) -> bool:
    """The published ordering of arms by a metric: T2 above T1 and T3, and every treatment above C."""
    return bool(means["T2"] > means["T1"] and means["T2"] > means["T3"] and (means.drop("C") > means["C"]).all())


def compare(per_seed_means: Sequence[pd.DataFrame], published: pd.DataFrame,
            tolerances: dict[str, float] = TOLERANCES) -> Verdict:
    """Average the per-seed arm means and set them beside the published means, cell by cell."""
    if not per_seed_means:
        raise ValueError("need the arm means of at least one seed")
    stacked = pd.concat(per_seed_means, keys=range(len(per_seed_means)), names=["seed", "arm"])
    mean, std = stacked.groupby(level="arm").mean(), stacked.groupby(level="arm").std(ddof=1)
    rows = []
    for row in published.itertuples(index=False):
        if row.metric not in mean.columns or row.arm not in mean.index:
            continue
        simulated = float(mean.loc[row.arm, row.metric])
        tolerance = tolerances.get(row.metric)
        rows.append({
            "arm": row.arm, "recommender": row.recommender, "metric": row.metric, "published": float(row.mean),
            "simulated": simulated, "ratio": simulated / row.mean if row.mean else math.nan,
            "seed_std": float(std.loc[row.arm, row.metric]) if len(per_seed_means) > 1 else math.nan,
            "tolerance": tolerance,
            "within": None if tolerance is None else within_tolerance(simulated, float(row.mean), tolerance),
        })
    table = pd.DataFrame(rows)
    missing = set(tolerances) - set(table["metric"])
    if missing:
        raise ValueError(f"published table lacks calibrated metrics {sorted(missing)}")
    calibrated = table[table["tolerance"].notna()]
    ordered = published_ordering(mean["mean_time_per_session"])
    return Verdict(table=table, ordered=ordered, within=bool(calibrated["within"].all()))


def evaluate_world(world: World, published: pd.DataFrame, seeds: Sequence[int], *, episodes: int = PUBLISHED_SESSIONS,
                   random_episodes: int = PUBLISHED_SESSIONS) -> Verdict:
    """Replicate TOP_POP on this world once per seed and compare the seed-averaged arm means with the published."""
    means = [arm_means(replicate_top_pop(world, seed, episodes=episodes, random_episodes=random_episodes))
             for seed in seeds]
    return compare(means, published)
