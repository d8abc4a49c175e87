"""Stage `calibrate`: the course's TOP_POP experiment through the service (`calibrate.transport`), beside the
published table.

Per seed: the service serves a day of Random traffic, the top-tracks list comes from that log (total listen time,
as the `toppop` stage ranks it), then the service serves TOP_POP (C Random, T1 TopPop(10), T2 TopPop(100),
T3 TopPop(1000)) to about the published number of sessions and the log is analysed per user. The arm means,
averaged over seeds, are set beside the published table (`botify_lab.research.published.compare`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from botify_lab.formats import atomic_write_bytes
from botify_lab.inprocess.toppop import traffic_seeds
from botify_lab.pipeline import layout
from botify_lab.pipeline.experiment import Traffic, run_experiment
from botify_lab.pipeline.outputs import atomic_output_dir, write_json, write_metrics
from botify_lab.pipeline.params import Params
from botify_lab.research import ab
from botify_lab.research.logs import read_log, sessionize, top_tracks
from botify_lab.research.published import (
    EXPERIMENT,
    PUBLISHED_TABLE,
    TOP_POP_ARMS,
    Verdict,
    arm_means,
    compare,
    load_published,
)

RANDOM_DAY = "RANDOM_DAY"  # the service needs two arms per experiment; both serve Random


def top_pop_arms(top_tracks_path: Path) -> list[dict]:
    return [
        {"recommender": "random"} if k is None else {"recommender": "toppop", "path": str(top_tracks_path), "k": k}
        for _, _, k in TOP_POP_ARMS
    ]


def replicate_through_the_service(
    world_dir: Path, out_dir: Path, seed: int, traffic: Traffic, *, random_episodes: int
) -> pd.DataFrame:
    """One seed of the replication through the service; returns the TOP_POP user metrics.

    `traffic` gives the TOP_POP day's size and how it is served (its seed is replaced by the seed's own); the
    Random day before it has `random_episodes` sessions. `out_dir` keeps both service configs, logs, summaries
    and the top-tracks list, so the run can be inspected.
    """
    out_dir = Path(out_dir)
    traffic_seed, experiment_seed = traffic_seeds(seed)
    random_day = dataclasses.replace(traffic, episodes=random_episodes, seed=traffic_seed)
    random_log = run_experiment(
        world_dir, [{"name": RANDOM_DAY, "arms": [{"recommender": "random"}] * 2}], random_day, out_dir / "random_day"
    )
    top_path = atomic_write_bytes(out_dir / "top_tracks.json", orjson.dumps(top_tracks(read_log(random_log))))
    experiment = dataclasses.replace(traffic, seed=experiment_seed)
    log = run_experiment(
        world_dir, [{"name": EXPERIMENT, "arms": top_pop_arms(top_path)}], experiment, out_dir / "top_pop"
    )
    return ab.user_metrics(sessionize(read_log(log)), EXPERIMENT)


def arm_mean_intervals(user_metrics: pd.DataFrame, metrics: Sequence[str], alpha: float = 0.05) -> pd.DataFrame:
    """Per arm and metric: the user-level mean with its t interval (one seed's uncertainty about the arm mean)."""
    rows = []
    for arm in ab.arm_order(user_metrics["arm"]):
        values = user_metrics[user_metrics["arm"] == arm]
        for metric in metrics:
            mean, lower, upper = ab.mean_interval(values[metric].to_numpy(dtype=float), alpha)
            rows.append(
                {"arm": arm, "metric": metric, "users": len(values), "mean": mean, "lower": lower, "upper": upper}
            )
    return pd.DataFrame(rows)


def _number(value, digits: int = 6):
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def calibration_json(per_seed: dict[int, pd.DataFrame], published: pd.DataFrame, tolerances: dict[str, float]) -> dict:
    """metrics/calibration.json: per arm and metric the published and simulated means, ratio and tolerance verdict,
    for the seed average and for every seed, with the spread across seeds."""
    seeds = sorted(per_seed)
    means = {seed: arm_means(per_seed[seed]) for seed in seeds}
    overall = compare([means[seed] for seed in seeds], published, tolerances)
    by_seed = {seed: compare([means[seed]], published, tolerances) for seed in seeds}
    arms: dict = {}
    for cell in overall.table.itertuples(index=False):
        values = np.array([means[seed].loc[cell.arm, cell.metric] for seed in seeds], dtype=float)
        entry = {
            "recommender": cell.recommender,
            "published": _number(cell.published),
            "simulated": _number(cell.simulated),
            "ratio": _number(cell.ratio),
            "tolerance": cell.tolerance,
            "within_tolerance": cell.within,
            "seeds": {
                str(seed): {
                    "simulated": _number(value),
                    "ratio": _number(value / cell.published),
                    "within_tolerance": None
                    if pd.isna(cell.tolerance)
                    else bool(by_seed[seed].table.set_index(["arm", "metric"]).loc[(cell.arm, cell.metric), "within"]),
                }
                for seed, value in zip(seeds, values)
            },
            "across_seeds": {
                "mean": _number(values.mean()),
                "std": _number(values.std(ddof=1)) if len(values) > 1 else None,
                "min": _number(values.min()),
                "max": _number(values.max()),
            },
        }
        arms.setdefault(cell.arm, {})[cell.metric] = entry
    return {
        "experiment": EXPERIMENT,
        "seeds": seeds,
        "users": {str(seed): int(len(per_seed[seed])) for seed in seeds},
        "sessions": {str(seed): int(per_seed[seed]["sessions"].sum()) for seed in seeds},
        "ordered": overall.ordered,
        "within_tolerance": overall.within,
        "calibrated": overall.calibrated,
        "worst_over_tolerance": _number(overall.worst),
        "arms": arms,
    }


def calibration_figure(per_seed: dict[int, pd.DataFrame], verdict: Verdict, alpha: float = 0.05):
    """Published vs simulated per arm: the published mean with its tolerance band, each seed's arm mean with its
    95% interval, and the seed average."""
    import matplotlib.pyplot as plt

    seeds = sorted(per_seed)
    calibrated = sorted(
        verdict.table.loc[verdict.table["tolerance"].notna(), "metric"].unique(),
        key=list(verdict.table["metric"]).index,
    )
    intervals = {seed: arm_mean_intervals(per_seed[seed], calibrated, alpha) for seed in seeds}
    table = verdict.table.set_index(["arm", "metric"])
    labels = {arm: f"{arm}\n{name}" for arm, name, _ in TOP_POP_ARMS}
    figure, axes = plt.subplots(1, len(calibrated), figsize=(6 * len(calibrated), 4.2))
    for axis, metric in zip(np.atleast_1d(axes), calibrated):
        arms = [arm for arm, _, _ in TOP_POP_ARMS]
        for position, arm in enumerate(arms):
            cell = table.loc[(arm, metric)]
            low, high = cell["published"] * (1 - cell["tolerance"]), cell["published"] * (1 + cell["tolerance"])
            axis.fill_between(
                [position - 0.35, position + 0.35],
                low,
                high,
                color="tab:green",
                alpha=0.18,
                label="published ± tolerance" if position == 0 else None,
            )
            axis.hlines(
                cell["published"],
                position - 0.35,
                position + 0.35,
                color="tab:green",
                linewidth=2,
                label="published" if position == 0 else None,
            )
            axis.hlines(
                cell["simulated"],
                position - 0.3,
                position + 0.3,
                color="black",
                linestyle="--",
                label="simulated, mean over seeds" if position == 0 else None,
            )
            for offset, seed in zip(np.linspace(-0.2, 0.2, len(seeds)), seeds):
                row = intervals[seed].set_index(["arm", "metric"]).loc[(arm, metric)]
                axis.errorbar(
                    position + offset,
                    row["mean"],
                    yerr=[[row["mean"] - row["lower"]], [row["upper"] - row["mean"]]],
                    fmt="o",
                    color=f"C{seeds.index(seed)}",
                    capsize=3,
                    label=f"seed {seed} (95% interval)" if position == 0 else None,
                )
        axis.set_xticks(range(len(arms)), [labels[arm] for arm in arms])
        axis.set(title=metric, ylabel=metric)
        axis.grid(axis="y", alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="upper left")
    figure.suptitle("TOP_POP: published (course) vs this world, through the service")
    figure.tight_layout()
    return figure


def calibration_headline(document: dict) -> dict:
    """metrics/calibration.json: the verdict and, per arm and calibrated metric, published vs simulated (the per-seed
    numbers and the reported-only metrics stay in build/calibrate/calibration.json)."""
    short = {
        key: document[key]
        for key in ("experiment", "seeds", "ordered", "within_tolerance", "calibrated", "worst_over_tolerance")
    }
    short["arms"] = {
        arm: {
            metric: {key: cell[key] for key in ("published", "simulated", "ratio", "within_tolerance")}
            for metric, cell in metrics.items()
            if cell["tolerance"] is not None
        }
        for arm, metrics in document["arms"].items()
    }
    return short


@dataclass
class Calibration:
    seeds: list[int]
    per_seed: dict[int, pd.DataFrame]
    published: pd.DataFrame
    verdict: Verdict
    document: dict


def calibrate(params: Params) -> Calibration:
    """Every seed of `calibrate:` through the service (build/calibrate/seed_<s>), then metrics/calibration.json."""
    settings = params.calibrate
    seeds = [int(params.seed) + offset for offset in range(int(settings.seeds))]
    tolerances = {metric: float(value) for metric, value in settings.tolerances.items()}
    with atomic_output_dir(layout.CALIBRATE) as scratch:
        per_seed = {
            seed: replicate_through_the_service(
                layout.WORLD,
                scratch / f"seed_{seed}",
                seed,
                Traffic.from_params(settings, params),
                random_episodes=int(settings.random_episodes),
            )
            for seed in seeds
        }
    published = load_published(PUBLISHED_TABLE)
    document = calibration_json(per_seed, published, tolerances)
    write_json(layout.CALIBRATE / "calibration.json", document)
    write_metrics("calibration", calibration_headline(document))
    verdict = compare([arm_means(per_seed[seed]) for seed in seeds], published, tolerances)
    return Calibration(seeds, per_seed, published, verdict, document)
