"""Stage `feedback`: the loop of days in view, round by round.

Per round: what each served arm earned (time per session), how much of the catalog the service served, how
concentrated the serving was (the Gini of serve counts), how often it stayed with the artist just played, and the
served model's fit (test MSE against the train mean's). The last point of the fit is the model the pipeline's other
stages use, trained on every round (`train@<collect.serve>`). Written as metrics/feedback.json, the DVC plot
plots/feedback.csv and reports/figures/feedback_loop.png (on the study's front page).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import read_metrics, save_figure, write_metrics, write_plot
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params, round_names
from botify_lab.pipeline.rounds import read_round_summary
from botify_lab.research.fidelity import COURSE_TRAINING

ARM_COLUMNS = ("mean_time_per_session", "coverage_share", "gini", "same_artist_share")
FINAL = "final"  # the fit on every round, served by the other stages


def feedback_table(params: Params) -> pd.DataFrame:
    """One row per (round, arm) plus the all-arms row, with the fit of the model served in that round."""
    rows = []
    for name in round_names(params):
        summary = read_round_summary(layout.round_dir(name))
        model = summary["model"] or {}
        fit = {
            "model": model.get("name", ""),
            "pairs": model.get("sizes", {}).get("pairs"),
            "model_mse": model.get("test", {}).get("model_mse"),
            "train_mean_mse": model.get("test", {}).get("train_mean_mse"),
        }
        for arm, numbers in {**summary["arms"], "all": summary["all"]}.items():
            rows.append(
                {"round": name, "number": summary["number"], "arm": arm, **{k: numbers[k] for k in ARM_COLUMNS}, **fit}
            )
    return pd.DataFrame(rows)


def final_fit(params: Params) -> dict:
    """The headline of the model every later stage serves (metrics/train_<collect.serve>.json)."""
    name = params.collect.serve
    trained = read_metrics(f"train_{name}")
    if trained is None:
        raise FileNotFoundError(f"{layout.metrics_file(f'train_{name}')} is missing: run `dvc repro train@{name}`")
    return {
        "model": name,
        "pairs": trained["sizes"]["pairs"],
        "model_mse": trained["test"]["model_mse"],
        "train_mean_mse": trained["test"]["train_mean_mse"],
    }


def feedback_figure(table: pd.DataFrame, final: dict):
    """Six panels over the rounds: four of the served traffic per arm, then the served fits beside the course's
    week-4 numbers (student reruns of the 2023 notebook: the shaded bands)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    titles = {
        "mean_time_per_session": "Time per session",
        "coverage_share": "Share of the catalog served",
        "gini": "Gini of serve counts (1: a few tracks take all)",
        "same_artist_share": "Served by the artist just played",
    }
    figure, axes = plt.subplots(2, 3, figsize=(15, 8))
    axes = axes.ravel()
    arms = table[table["arm"] != "all"]
    for axis, column in zip(axes, ARM_COLUMNS):
        sns.lineplot(arms, x="number", y=column, hue="arm", marker="o", ax=axis, legend=column == ARM_COLUMNS[0])
        axis.set_title(titles[column], fontsize=11)
        axis.set_xlabel("round")
        axis.set_ylabel("")
    fits = table[(table["arm"] == "all") & table["model_mse"].notna()][
        ["number", "pairs", "model_mse", "train_mean_mse"]
    ]
    last = int(table["number"].max()) + 1
    final_row = {"number": last, **{key: final[key] for key in ("pairs", "model_mse", "train_mean_mse")}}
    fits = pd.concat([fits, pd.DataFrame([final_row])], ignore_index=True)
    course = COURSE_TRAINING
    axis = axes[4]
    axis.axhspan(*course["model_test_mse"], color="tab:blue", alpha=0.15, label="course's model (student reruns)")
    axis.axhspan(*course["train_mean_mse"], color="tab:orange", alpha=0.15, label="course's train mean")
    axis.plot(fits["number"], fits["model_mse"], marker="o", color="tab:blue", label=f"{final['model']}")
    axis.plot(
        fits["number"], fits["train_mean_mse"], marker="s", linestyle="--", color="tab:orange", label="train mean"
    )
    axis.set_title(f"Test MSE of the fit served in each round ({last}: final)", fontsize=11)
    axis.legend(fontsize=8)
    axis = axes[5]
    axis.axhspan(*course["pairs"], color="tab:gray", alpha=0.15, label="course's week-4 data (student reruns)")
    axis.bar(fits["number"], fits["pairs"], color="tab:blue", width=0.5)
    axis.set_title("Training pairs of that fit", fontsize=11)
    axis.legend(fontsize=8)
    for axis in axes[4:]:
        axis.set_xlabel("round the fit serves")
    for axis in axes:
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    return figure


def _number_or_none(value) -> float | None:
    return None if pd.isna(value) else float(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    params = load_params(parser.parse_args(argv).params)
    table = feedback_table(params)
    final = final_fit(params)
    write_plot("feedback", table)
    rounds = {
        name: {
            "model": group["model"].iloc[0] or None,
            "arms": {row.arm: {k: getattr(row, k) for k in ARM_COLUMNS} for row in group.itertuples()},
            **{key: _number_or_none(group[key].iloc[0]) for key in ("model_mse", "train_mean_mse")},
        }
        for name, group in table.groupby("round", sort=False)
    }
    write_metrics("feedback", {"rounds": rounds, FINAL: final}, sort_keys=True)
    save_figure(feedback_figure(table, final), "feedback_loop")
    for name, numbers in rounds.items():
        arms = ", ".join(f"{arm} {values['mean_time_per_session']:.3f}" for arm, values in numbers["arms"].items())
        print(f"feedback: {name}: time per session {arms}")


if __name__ == "__main__":
    main()
