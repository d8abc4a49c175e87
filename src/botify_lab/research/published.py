"""The course's published TOP_POP table, and how the arm means of a run of the same experiment compare with it.

The only record of how the course's real world reacted to TopPop is the week-1 table: Random against TopPop(10),
TopPop(100) and TopPop(1000), about 3,700 sessions, analysed per user. A world is judged by how close the
seed-averaged arm means of its runs land to the published means (within a relative tolerance per metric) and
whether they keep the published ordering.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from botify_lab.research import ab

EXPERIMENT = "TOP_POP"
# The published arms in order: (arm, the course's label, k of TopPop or None for Random).
TOP_POP_ARMS: tuple[tuple[str, str, int | None], ...] = (
    ("C", "Random", None),
    ("T1", "TopPop(10)", 10),
    ("T2", "TopPop(100)", 100),
    ("T3", "TopPop(1000)", 1000),
)
REPORTED_METRICS = ("mean_time_per_session", "mean_tracks_per_session", "time", "sessions")
PUBLISHED_SESSIONS = 3700  # the published table's size: user-level `sessions` means times users
PUBLISHED_TABLE = Path(__file__).with_name("published_ab.csv")  # copy of the course's published numbers


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


def compare(per_seed_means: Sequence[pd.DataFrame], published: pd.DataFrame, tolerances: dict[str, float]) -> Verdict:
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
        rows.append(
            {
                "arm": row.arm,
                "recommender": row.recommender,
                "metric": row.metric,
                "published": float(row.mean),
                "simulated": simulated,
                "ratio": simulated / row.mean if row.mean else math.nan,
                "seed_std": float(std.loc[row.arm, row.metric]) if len(per_seed_means) > 1 else math.nan,
                "tolerance": tolerance,
                "within": None if tolerance is None else within_tolerance(simulated, float(row.mean), tolerance),
            }
        )
    table = pd.DataFrame(rows)
    missing = set(tolerances) - set(table["metric"])
    if missing:
        raise ValueError(f"published table lacks calibrated metrics {sorted(missing)}")
    calibrated = table[table["tolerance"].notna()]
    ordered = published_ordering(mean["mean_time_per_session"])
    return Verdict(table=table, ordered=ordered, within=bool(calibrated["within"].all()))


def arm_means(user_metrics: pd.DataFrame, metrics: Sequence[str] = REPORTED_METRICS) -> pd.DataFrame:
    """Per arm (rows, natural order) the mean of each user-level metric (columns): the published table's cells."""
    means = user_metrics.groupby("arm")[list(metrics)].mean()
    return means.loc[ab.arm_order(means.index)]


def sessions_frame(
    users: np.ndarray, arms: Sequence[str], steps: np.ndarray, rewards: np.ndarray, experiment: str = EXPERIMENT
) -> pd.DataFrame:
    """The sessions `logs.sessionize` would build from the service's log of these episodes (latency 0)."""
    return pd.DataFrame(
        {
            "user": np.asarray(users, dtype=np.int64),
            experiment: np.asarray(arms, dtype=object),
            "tracks": np.asarray(steps, dtype=np.int64) + 1,  # one /next row per recommendation plus the /last row
            "time": np.asarray(rewards, dtype=np.float64),
            "latency": np.zeros(len(users)),
        }
    )
