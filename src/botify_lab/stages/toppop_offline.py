"""Stage `toppop_offline`: the course's week-2 offline evaluation of TopPop (notebooks/toppop_offline.ipynb).

The Random arm of the collected log (the `collect` experiment's arm serving `random`) is cut in two by time, user by
user: the first `toppop_offline.train_share` of each user's events (in the user's own order) give the popularity
(total listen time per track, the course's TopPop), the rest give each user's relevant tracks (listened longer than
`toppop_offline.positive_time`). TopPop(k) for every k of `toppop_offline.ks` is scored there with precision@`k`,
MRR and hit rate@`k`, twice: `shuffled`, the exact expectation over random orderings of the top k (the service
answers a random track among the top k, so this is TopPop(k) as served), and `ranked`, the top list in popularity
order (the same first `k` tracks for every k). The notebook sets the offline numbers beside the online TOP_POP
effects of the calibration stage (metrics/calibration.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from botify_lab.formats import arm_name
from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import write_metrics, write_plot
from botify_lab.pipeline.params import Params, ToppopOfflineParams
from botify_lab.research.logs import arms, read_log, top_tracks, track_popularity
from botify_lab.research.offline import ranking_metrics, shuffled_metrics
from botify_lab.research.published import TOP_POP_ARMS

METRICS_NAME = "toppop_offline"
FIGURE_NAME = "toppop_popularity"
CALIBRATION_METRICS = layout.metrics_file("calibration")


def random_arm(events: pd.DataFrame, experiment: str, recommenders: list[str]) -> pd.DataFrame:
    """The rows of the collect experiment's arm that served `random` (its position names the arm: C, T1, ...)."""
    name = arm_name(list(recommenders).index("random"))
    return events[arms(events, experiment).to_numpy() == name]


def split_each_users_history(events: pd.DataFrame, train_share: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's first `train_share` of events (timestamp order, log order on ties), and the rest.

    Cut per user rather than at one moment of the whole log: a user's requests reach the service one after another,
    so their order is the same on every run, while the order across users is wall-clock interleaving of processes
    and connections, which would move the events near a global cut from one run to the next.
    """
    order = np.lexsort((events["order"].to_numpy(), events["timestamp"].to_numpy(), events["user"].to_numpy()))
    ordered = events.iloc[order]
    by_user = ordered.groupby("user", sort=False)
    in_train = by_user.cumcount().to_numpy() < by_user["user"].transform("size").to_numpy() * train_share
    return ordered[in_train], ordered[~in_train]


def relevant_tracks(events: pd.DataFrame, positive_time: float) -> dict[int, set[int]]:
    """Per user, the tracks listened to longer than `positive_time`."""
    positive = events.loc[events["time"] > positive_time, ["user", "track"]]
    return {int(user): set(group.tolist()) for user, group in positive.groupby("user", sort=True)["track"]}


def offline_table(ranking: list[int], relevant: dict[int, set[int]], ks: list[int], k: int) -> pd.DataFrame:
    """One row per TopPop(size): shuffled (as served) and ranked precision@k, MRR and hit rate@k."""
    rows = []
    for size in ks:
        top = ranking[:size]
        shuffled = shuffled_metrics(top, relevant, k)
        ranked = ranking_metrics(top, relevant, k)
        relevant_in_top = np.mean([len(tracks & set(top)) for tracks in relevant.values()]) if relevant else 0.0
        rows.append(
            {
                "recommender": f"TopPop({size})",
                "size": size,
                "users": shuffled["users"],
                "relevant_in_top": float(relevant_in_top),
                **{f"shuffled_{name}": value for name, value in shuffled.items() if name not in ("users", "k")},
                **{f"ranked_{name}": value for name, value in ranked.items() if name not in ("users", "k")},
            }
        )
    return pd.DataFrame(rows)


def online_effects(calibration: dict, metric: str = "mean_time_per_session") -> pd.DataFrame:
    """Per TopPop arm of metrics/calibration.json: simulated and published mean, effect vs Random (% of control)."""
    arms_ = calibration["arms"]
    names = {arm: name for arm, name, _ in TOP_POP_ARMS}
    control = next(arm for arm in arms_ if names.get(arm) == "Random")
    rows = []
    for arm, metrics in arms_.items():
        row = metrics[metric]
        if arm == control:
            continue
        rows.append(
            {
                "recommender": names[arm],
                "arm": arm,
                f"online_{metric}": row["simulated"],
                f"published_{metric}": row["published"],
                "online_effect": 100.0 * (row["simulated"] / arms_[control][metric]["simulated"] - 1.0),
                "published_effect": 100.0 * (row["published"] / arms_[control][metric]["published"] - 1.0),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class ToppopOffline:
    popularity: pd.Series
    ranking: list[int]
    relevant: dict[int, set[int]]
    table: pd.DataFrame
    metrics: dict


def evaluate_toppop(
    events: pd.DataFrame, settings: ToppopOfflineParams, experiment: str, recommenders: list[str]
) -> ToppopOffline:
    """The whole evaluation on a collected log's events (no files written)."""
    random_rows = random_arm(events, experiment, recommenders)
    if random_rows.empty:
        raise ValueError(f"no rows of the random arm of experiment {experiment!r} in the log")
    train, test = split_each_users_history(random_rows, float(settings.train_share))
    popularity = track_popularity(train)
    ranking = top_tracks(train)
    relevant = relevant_tracks(test, float(settings.positive_time))
    k = int(settings.k)
    table = offline_table(ranking, relevant, [int(size) for size in settings.ks], k)
    metrics = {
        "random_arm_events": int(len(random_rows)),
        "train_events": int(len(train)),
        "test_events": int(len(test)),
        "ranked_tracks": len(ranking),
        "test_users": len(relevant),
        "k": k,
        "toppop": {
            row["recommender"]: {
                name: round(float(row[name]), 6) for name in table.columns if name.startswith(("shuffled_", "ranked_"))
            }
            for row in table.to_dict("records")
        },
    }
    return ToppopOffline(popularity, ranking, relevant, table, metrics)


def run_toppop_offline(params: Params, log_dir: Path = layout.COLLECT_LOG) -> ToppopOffline:
    """The stage: metrics/toppop_offline.json and plots/toppop_offline.csv."""
    collect = params.collect
    result = evaluate_toppop(read_log(log_dir), params.toppop_offline, collect.experiment, collect.recommenders)
    write_metrics(METRICS_NAME, result.metrics)
    write_plot(METRICS_NAME, result.table.round(6))
    return result


def read_calibration(path: Path = CALIBRATION_METRICS) -> dict:
    return orjson.loads(Path(path).read_bytes())


def offline_vs_online(result: ToppopOffline, calibration: dict) -> pd.DataFrame:
    """The offline table beside the online TOP_POP effects, one row per TopPop(k) found in both."""
    online = online_effects(calibration)
    return result.table.merge(online, on="recommender", how="inner")


def popularity_figure(result: ToppopOffline, ks: list[int]):
    """The popularity curve (total listen time by rank, log-log) with the TopPop cut-offs marked."""
    import matplotlib.pyplot as plt

    values = np.sort(result.popularity.to_numpy())[::-1]
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.loglog(np.arange(1, len(values) + 1), values)
    for size in ks:
        ax.axvline(size, color="gray", linestyle=":")
        ax.text(size, values.max(), f" top {size}", va="top", fontsize=8)
    ax.set(
        title=f"track popularity in each user's first half of the Random log ({len(values):,} tracks)",
        xlabel="rank",
        ylabel="total listen time",
    )
    figure.tight_layout()
    return figure
