"""Stages `indexed` and `leaderboard`: the course's reference table of all its recommenders in one A/B experiment.

`indexed` trains the collaborative model (botify_lab.collab, the course's LightFM step) on the collected log's
positive interactions (time > 0.8) and writes each user's top tracks for the service's Indexed recommender.
The `leaderboard` notebook serves one experiment with Random as control and every other recommender as a
treatment, and analyses it as spec 7.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import orjson
import pandas as pd

from botify_lab import ab
from botify_lab.catalog import atomic_write_bytes, read_catalog
from botify_lab.collab import POSITIVE_TIME, positive_interactions, recommend_users, train_bpr, write_user_recommendations
from botify_lab.logs import read_log
from botify_lab.pipeline.params import load_params

LEADERBOARD_METRICS = ("mean_time_per_session", "mean_tracks_per_session", "time", "sessions")


def leaderboard_arms(*, top_tracks: Path, toppop_k: int, user_recs: Path, contextual: Path, ours: Path) -> list[dict]:
    """The experiment's arms in order (C Random, then the treatments), each with the course's label."""
    return [
        {"name": "C", "label": "Random", "recommender": "random"},
        {"name": "T1", "label": "StickyArtist", "recommender": "sticky_artist"},
        {"name": "T2", "label": f"TopPop({toppop_k})", "recommender": "toppop", "path": str(top_tracks), "k": toppop_k},
        {"name": "T3", "label": "Indexed", "recommender": "indexed", "path": str(user_recs)},
        {"name": "T4", "label": "Contextual", "recommender": "contextual", "path": str(contextual)},
        {"name": "T5", "label": "Ours", "recommender": "contextual", "path": str(ours)},
    ]


def service_arms(arms: list[dict]) -> list[dict]:
    """The arms as the service config takes them (without the labels)."""
    return [{key: value for key, value in arm.items() if key != "label"} for arm in arms]


def arm_summary(user_metrics: pd.DataFrame, labels: dict[str, str],
                metrics: tuple[str, ...] = LEADERBOARD_METRICS) -> pd.DataFrame:
    """Per arm: its label, users, and the mean of each user-level metric, best mean_time_per_session first."""
    grouped = user_metrics.groupby("arm")
    summary = grouped[list(metrics)].mean()
    summary.insert(0, "users", grouped.size())
    summary.insert(0, "recommender", [labels.get(arm, arm) for arm in summary.index])
    return summary.sort_values("mean_time_per_session", ascending=False)


def leaderboard_json(user_metrics: pd.DataFrame, effects: pd.DataFrame, *, experiment: str, labels: dict[str, str],
                     srm: dict, alpha: float) -> dict:
    """metrics/leaderboard.json: the ranking, per-arm means, and the course's effects vs Random (no latency)."""
    summary = arm_summary(user_metrics, labels)
    document = ab.ab_metrics_json(effects, experiment=experiment, metrics=user_metrics, srm=srm, alpha=alpha)
    document["recommenders"] = {arm: labels[arm] for arm in ab.arm_order(labels)}
    document["ranking"] = [labels.get(arm, arm) for arm in summary.index]
    document["arm_means"] = {
        arm: {metric: round(float(summary.loc[arm, metric]), 6) for metric in LEADERBOARD_METRICS}
        for arm in ab.arm_order(summary.index)
    }
    return document


def leaderboard_figure(user_metrics: pd.DataFrame, effects: pd.DataFrame, labels: dict[str, str]):
    """Left: mean_time_per_session per arm with its 95% interval; right: each treatment's effect vs Random."""
    import matplotlib.pyplot as plt
    from scipy import stats

    metric = "mean_time_per_session"
    arms = ab.arm_order(user_metrics["arm"])
    means, halves = [], []
    for arm in arms:
        values = user_metrics.loc[user_metrics["arm"] == arm, metric].to_numpy(dtype=float)
        means.append(values.mean())
        halves.append(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = [f"{arm}\n{labels.get(arm, arm)}" for arm in arms]
    left.bar(names, means, yerr=halves, capsize=4, color=[f"C{i}" for i in range(len(arms))])
    left.set(title=f"{metric} per arm (95% interval)", ylabel=metric)
    rows = effects[effects["metric"] == metric].set_index("treatment").loc[arms[1:]]
    colours = ["tab:green" if row.significant and row.effect > 0 else "tab:red" if row.significant else "tab:gray"
               for row in rows.itertuples()]
    right.barh([labels.get(arm, arm) for arm in rows.index], rows["effect"], color=colours,
               xerr=[rows["effect"] - rows["lower"], rows["upper"] - rows["effect"]], capsize=4)
    right.axvline(0, color="black", linewidth=0.8)
    right.invert_yaxis()
    right.set(title=f"effect on {metric} vs Random (%, Welch 95%)", xlabel="percent of control")
    figure.tight_layout()
    return figure


def train_indexed(log_dir: Path, catalog_path: Path, out_dir: Path, settings: dict, seed: int) -> dict:
    """Train the collaborative model on the log's positives and write `user_recs.json` and `train.json`."""
    events = read_log(log_dir)
    interactions = positive_interactions(events, POSITIVE_TIME)
    n_tracks = len(read_catalog(catalog_path))
    model = train_bpr(interactions, n_tracks, factors=int(settings["factors"]), epochs=int(settings["epochs"]),
                      lr=float(settings["lr"]), regularization=float(settings["regularization"]),
                      batch_size=int(settings["batch_size"]), seed=seed, progress=False)
    recommendations = recommend_users(model, int(settings["top"]))
    write_user_recommendations(recommendations, Path(out_dir) / "user_recs.json")
    report = {
        "positive_pairs": int(len(interactions)),
        "users": int(len(model.users)),
        "tracks_per_user": int(settings["top"]),
        "final_loss": round(model.history[-1]["loss"], 6),
        "history": [{"epoch": row["epoch"], "loss": round(row["loss"], 6)} for row in model.history],
    }
    atomic_write_bytes(Path(out_dir) / "train.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stage `indexed`: per-user lists from a BPR model of the log.")
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--log", default="build/collect/log", type=Path)
    parser.add_argument("--catalog", default="data/tracks.json", type=Path)
    parser.add_argument("--out", default="build/indexed", type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    from botify_lab.pipeline.outputs import atomic_output_dir

    with atomic_output_dir(args.out) as scratch:
        report = train_indexed(args.log, args.catalog, scratch, params["indexed"], int(params["seed"]))
    print(f"indexed: {report['users']} users, {report['positive_pairs']} positive pairs, "
          f"final BPR loss {report['final_loss']}")


if __name__ == "__main__":
    main()
