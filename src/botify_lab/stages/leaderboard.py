"""Stage `leaderboard`: the course's reference table, every recommender in one A/B experiment
(notebooks/leaderboard.ipynb).

Random is the control; the treatments are the course's 2023 reference table arm for arm (see `leaderboard_arms`)
plus every model of `models:`, each labelled with its `label`, and the true-neighbour reference of what the world
allows. The real service serves it to seeded simulated
traffic; the analysis is the course's week-1 table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from botify_lab.formats import arm_name
from botify_lab.pipeline import layout
from botify_lab.pipeline.experiment import Traffic, run_experiment, serving_arm
from botify_lab.pipeline.outputs import atomic_output_dir, write_json, write_metrics, write_plot
from botify_lab.pipeline.params import Params, model_names
from botify_lab.pipeline.reference import REFERENCE_LABEL
from botify_lab.research import ab
from botify_lab.research.logs import read_log, sessionize

LEADERBOARD_METRICS = ("mean_time_per_session", "mean_tracks_per_session", "time", "sessions")


def leaderboard_arms(params: Params, reference: Path | None = None) -> list[dict]:
    """The experiment's arms in order (C Random, then the treatments), each with a `label` for tables.

    The course's 2023 table arm for arm: Random, StickyArtist, TopPop(k), the user-based baseline and the tuned
    collaborative model (both Indexed), then the Contextual recommender on every model of `models:`, the diverse
    item-to-item lists right after the course's own model, every recommender of one's own (`recommenders:`) and,
    when a file is given, the true-neighbour reference computed from the hidden world (labelled as a reference: no
    model could learn it).
    """
    k = int(params.leaderboard.toppop_k)
    arms = [
        {"label": "Random", "recommender": "random"},
        {"label": "StickyArtist", "recommender": "sticky_artist"},
        {"label": f"TopPop({k})", "recommender": "toppop", "path": str(layout.TOP_TRACKS), "k": k},
        {"label": "User-based", "recommender": "indexed", "path": str(layout.USER_BASED_RECS)},
        {"label": "Collaborative (Indexed)", "recommender": "indexed", "path": str(layout.USER_RECS)},
    ]
    for name in model_names(params):
        arms.append({"label": params.models[name].label, **serving_arm(params, name)})
        if name == params.simulate.control:
            arms.append({"label": "Diverse i2i", "recommender": "contextual", "path": str(layout.I2I_RECS)})
    for name, spec in params.recommenders.items():
        arms.append({"label": spec.label, **serving_arm(params, name)})
    if reference is not None:
        arms.append({"label": REFERENCE_LABEL, "recommender": "contextual", "path": str(reference)})
    return [{"name": arm_name(position), **arm} for position, arm in enumerate(arms)]


def service_arms(arms: list[dict]) -> list[dict]:
    """The arms as the service config takes them (without the labels)."""
    return [{key: value for key, value in arm.items() if key != "label"} for arm in arms]


def arm_summary(
    user_metrics: pd.DataFrame, labels: dict[str, str], metrics: tuple[str, ...] = LEADERBOARD_METRICS
) -> pd.DataFrame:
    """Per arm: its label, users, and the mean of each user-level metric, best mean_time_per_session first."""
    grouped = user_metrics.groupby("arm")
    summary = grouped[list(metrics)].mean()
    summary.insert(0, "users", grouped.size())
    summary.insert(0, "recommender", [labels.get(arm, arm) for arm in summary.index])
    return summary.sort_values("mean_time_per_session", ascending=False)


def leaderboard_json(
    user_metrics: pd.DataFrame,
    effects: pd.DataFrame,
    *,
    experiment: str,
    labels: dict[str, str],
    srm: dict,
    alpha: float,
) -> dict:
    """metrics/leaderboard.json: the ranking, per-arm means, and the course's effects vs Random (no latency)."""
    summary = arm_summary(user_metrics, labels)
    document = ab.ab_metrics_json(
        effects, experiment=experiment, totals=ab.arm_totals(user_metrics), srm=srm, alpha=alpha
    )
    document["recommenders"] = {arm: labels[arm] for arm in ab.arm_order(labels)}
    document["ranking"] = [labels.get(arm, arm) for arm in summary.index]
    document["arm_means"] = {
        arm: {metric: round(float(summary.loc[arm, metric]), 6) for metric in LEADERBOARD_METRICS}
        for arm in ab.arm_order(summary.index)
    }
    return document


def leaderboard_figure(user_metrics: pd.DataFrame, effects: pd.DataFrame, labels: dict[str, str], alpha: float = 0.05):
    """Left: mean_time_per_session per arm with its interval; right: each treatment's effect vs Random."""
    import matplotlib.pyplot as plt

    metric = "mean_time_per_session"
    arms = ab.arm_order(user_metrics["arm"])
    means, halves = [], []
    for arm in arms:
        mean, _, upper = ab.mean_interval(user_metrics.loc[user_metrics["arm"] == arm, metric], alpha)
        means.append(mean)
        halves.append(upper - mean)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = [f"{arm} {labels.get(arm, arm)}" for arm in arms]  # horizontal bars: long names stay readable
    left.barh(names, means, xerr=halves, capsize=4, color=[f"C{i}" for i in range(len(arms))])
    left.invert_yaxis()
    left.set(title=f"{metric} per arm ({100 * (1 - alpha):.0f}% interval)", xlabel=metric)
    rows = effects[effects["metric"] == metric].set_index("treatment").loc[arms[1:]]
    colours = [ab.figure_colour(row.effect, row.significant) for row in rows.itertuples()]
    right.barh(
        [labels.get(arm, arm) for arm in rows.index],
        rows["effect"],
        color=colours,
        xerr=[rows["effect"] - rows["lower"], rows["upper"] - rows["effect"]],
        capsize=4,
    )
    right.axvline(0, color="black", linewidth=0.8)
    right.invert_yaxis()
    right.set(title=f"effect vs Random ({100 * (1 - alpha):.0f}% Welch interval)", xlabel=f"{metric}, % of Random")
    figure.tight_layout()
    return figure


@dataclass
class Leaderboard:
    labels: dict[str, str]
    metrics: pd.DataFrame
    effects: pd.DataFrame
    srm: dict
    document: dict


def run_leaderboard(params: Params) -> Leaderboard:
    """Serve the experiment (build/leaderboard), analyse it and write metrics/leaderboard.json."""
    settings, alpha = params.leaderboard, float(params.ab.alpha)
    with atomic_output_dir(layout.LEADERBOARD) as scratch:
        arms = leaderboard_arms(params, layout.REFERENCE_RECS)
        labels = {arm["name"]: arm["label"] for arm in arms}
        experiment = {"name": settings.experiment, "arms": service_arms(arms)}
        run_experiment(layout.WORLD, [experiment], Traffic.from_params(settings, params), scratch)
    metrics = ab.user_metrics(sessionize(read_log(layout.LEADERBOARD_LOG)), settings.experiment)
    effects = ab.ab_effects(metrics, alpha=alpha, power=float(params.ab.power))
    srm = ab.srm_check(metrics["arm"].value_counts(), alpha=float(params.ab.srm_alpha))
    document = leaderboard_json(metrics, effects, experiment=settings.experiment, labels=labels, srm=srm, alpha=alpha)
    write_json(layout.LEADERBOARD / "leaderboard.json", document)
    write_metrics("leaderboard", leaderboard_headline(document))
    write_plot("leaderboard", leaderboard_rows(document))
    return Leaderboard(labels, metrics, effects, srm, document)


def leaderboard_headline(document: dict) -> dict:
    """metrics/leaderboard.json: per arm its recommender, mean time and tracks per session, and the effect on time
    per session vs Random with its interval and the effect detectable with the configured power (the full table
    stays in build/leaderboard/leaderboard.json)."""
    short = ab.headline(
        document, metrics=("mean_time_per_session",), fields=("effect", "lower", "upper", "significant", "mde")
    )
    return {key: short[key] for key in ("experiment", "control", "alpha", "recommenders", "ranking", "srm")} | {
        "arm_means": {
            arm: {metric: means[metric] for metric in ("mean_time_per_session", "mean_tracks_per_session")}
            for arm, means in document["arm_means"].items()
        },
        "effects": short["effects"],
    }


def leaderboard_rows(document: dict) -> pd.DataFrame:
    """One row per arm, best first: a DVC plot of the ranking."""
    effects = document["effects"]
    return pd.DataFrame(
        [
            {
                "arm": arm,
                "recommender": document["recommenders"][arm],
                "mean_time_per_session": document["arm_means"][arm]["mean_time_per_session"],
                "effect": effects[arm]["mean_time_per_session"]["effect"] if arm in effects else 0.0,
            }
            for arm in sorted(
                document["arm_means"], key=lambda arm: -document["arm_means"][arm]["mean_time_per_session"]
            )
        ]
    )
