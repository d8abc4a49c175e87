"""Stage `ope`: every leaderboard recommender judged before serving it, from a log of the collection's recommenders,
and checked against what it earned when it was served.

The logging log is a held-out day, served by the stage `ope_log`: the collection's recommenders (Random,
StickyArtist; one arm each, experiment `ope.experiment`) served to `ope.episodes` sessions on the day after the loop's
last round, a day no model trained on. (On round 0's own log the models' lists hold the logged actions far more often
than chance, since they were fit to those very pairs, and the estimates run far above anything a listen-time share
allows.) Each "next" line carries the probability its arm drew the recommendation; each logging arm is one logging
policy. For every recommender of the leaderboard (the same arms, files and fallbacks the service serves) the
estimators of research/ope.py give its expected listen time of the next track (IPS, SNIPS, DR with a per-track mean
reward model); beside each, the online value: that recommender's mean listen time per decision in the leaderboard
run, and its time per session.

What the comparison can and cannot say: an estimate is the target's next-track reward in the logging policy's
contexts (the tracks users had just heard under Random or StickyArtist); online, the target chose the contexts too.
The difference is part of each estimate's bias and is reported as such. Coverage is over `ope.replicates` disjoint
user groups of the log (independent logs of the same policy, as separate seeds would give): the share whose estimate
is within the 95% interval of its difference from the online value (both errors combined, since the online value is
itself measured on finite traffic). Support: the share of the target's draw the logger could have served at all;
where it is short of 1 (StickyArtist's log, any target leaving the artist), IPS and DR cannot see the missing part.
Written as metrics/ope.json, plots/ope.csv and reports/figures/ope.png (on the study's front page).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from botify.catalog import load_catalog
from botify.config import is_custom, load_config
from botify.recommenders import build_recommender
from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import read_metrics, save_figure, write_metrics, write_plot
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params
from botify_lab.research import ope
from botify_lab.research.logs import read_log
from botify_lab.stages.leaderboard import leaderboard_arms, service_arms
from botify_lab.stages.ope_log import logging_day, logging_experiment

ESTIMATORS = ("IPS", "SNIPS", "DR")
DIGITS = 6


def candidates_of(recommender) -> ope.Candidates:
    """The list a served recommender draws from per context; Random has none (a draw over the whole catalog)."""
    return getattr(recommender, "candidates", lambda user, track: None)


def policies(experiment: dict, catalog) -> dict[str, tuple[str, ope.Candidates]]:
    """Arm name -> (its recommender's name, the list function of the recommender the service builds for it), the
    arms parsed by the service's own config reader."""
    config = load_config({"catalog": str(layout.CATALOG), "experiments": [experiment]})
    return {
        arm.name: (arm.recommender, candidates_of(build_recommender(arm, catalog)))
        for arm in config.experiments[0].arms
    }


def online_values(params: Params, labels: dict[str, str]) -> dict[str, dict]:
    """Per leaderboard recommender: its mean listen time per decision (with a 95% interval) and time per session."""
    settings = params.leaderboard
    decisions = ope.logged_decisions(read_log(layout.LEADERBOARD_LOG), settings.experiment, arms=set(labels))
    board = read_metrics("leaderboard")
    if board is None:
        raise FileNotFoundError(f"{layout.metrics_file('leaderboard')} is missing: run `dvc repro leaderboard`")
    values = {}
    for arm, label in labels.items():
        rewards = decisions.loc[decisions["arm"] == arm, "reward"].to_numpy()
        mean = ope.ips(rewards, np.ones(len(rewards)))
        low, high = mean.interval
        values[label] = {
            "arm": arm,
            "per_step": mean.value,
            "ci_low": low,
            "ci_high": high,
            "standard_error": mean.standard_error,
            "decisions": len(rewards),
            "mean_time_per_session": board["arm_means"][arm]["mean_time_per_session"],
        }
    return values


def replicate_estimates(
    decisions: pd.DataFrame, terms: ope.PolicyTerms, reward_model: np.ndarray, replicates: int
) -> dict[str, list[ope.Estimate]]:
    """Each estimator on each of `replicates` disjoint user groups (user mod replicates)."""
    groups = decisions["user"].to_numpy() % replicates
    found: dict[str, list[ope.Estimate]] = {name: [] for name in ESTIMATORS}
    for group in range(replicates):
        rows = np.flatnonzero(groups == group)
        if len(rows) < 2:
            continue
        part = ope.PolicyTerms(terms.probability[rows], terms.model_expectation[rows], terms.support[rows])
        for estimate in ope.estimate_all(decisions.iloc[rows], part, reward_model):
            found[estimate.estimator].append(estimate)
    return found


def _rounded(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), DIGITS)


def rank_correlation(estimates: list[float | None], truths: list[float]) -> float | None:
    """Spearman's rho of the estimates with the online values; None when an estimate is missing (no decision, or
    no weight) or either side is constant."""
    if any(value is None for value in estimates) or len(set(estimates)) < 2 or len(set(truths)) < 2:
        return None
    return _rounded(stats.spearmanr(estimates, truths).statistic)


def consistent(estimate: ope.Estimate, truth: float, truth_error: float) -> bool:
    """Whether the estimate is within the 95% interval of its difference from the online value."""
    half = stats.norm.ppf(0.5 + ope.CONFIDENCE / 2) * math.hypot(estimate.standard_error, truth_error)
    return abs(estimate.value - truth) <= half


@dataclass(frozen=True)
class _Judged:
    """What judging one (logging arm, recommender) pair reads: set before the worker processes fork."""

    logged: dict[str, pd.DataFrame]  # logging arm -> its decisions
    reward_model: np.ndarray
    loggers: dict[str, tuple[str, ope.Candidates]]
    targets: dict[str, ope.Candidates]
    online: dict[str, dict]
    replicates: int


_JUDGED: _Judged | None = None


def _judge(pair: tuple[str, str]) -> dict:
    """metrics/ope.json's row of a (logging arm, recommender label) pair: support, then each estimator."""
    judged, (arm, label) = _JUDGED, pair
    logged = judged.logged[arm]
    terms = ope.policy_terms(judged.targets[label], judged.loggers[arm][1], logged, judged.reward_model)
    truth, truth_error = judged.online[label]["per_step"], judged.online[label]["standard_error"]
    replicated = replicate_estimates(logged, terms, judged.reward_model, judged.replicates)
    row = {"support": _rounded(terms.support.mean())}
    for estimate in ope.estimate_all(logged, terms, judged.reward_model):
        found = estimate.as_row()
        covered = [consistent(part, truth, truth_error) for part in replicated[estimate.estimator]]
        row[estimate.estimator] = {
            **{key: _rounded(found[key]) for key in ("value", "ci_low", "ci_high", "standard_error")},
            "bias": _rounded(estimate.value - truth),
            "coverage": _rounded(float(np.mean(covered))) if covered else None,
            "effective_decisions": _rounded(estimate.effective_decisions),
            "matched_share": _rounded(estimate.matched_share),
        }
    return row


def _map_in_processes(function, items, processes: int) -> list:
    """`function` over `items` in forked worker processes (they inherit what the parent built, recommenders and
    log included), results in the items' order; in this process when one is asked. Each pair's row depends on its
    inputs alone, so the document is the same for any count."""
    if processes == 1:
        return list(map(function, items))
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(function, items))


def evaluate(params: Params, log_dir: Path = layout.OPE_LOG) -> dict:
    """metrics/ope.json's content: the logging arms, the online values and every (logger, target, estimator)."""
    settings = params.ope
    catalog = load_catalog(layout.CATALOG)
    decisions = ope.logged_decisions(read_log(log_dir), settings.experiment)
    reward_model = ope.track_mean_rewards(decisions, len(catalog), float(settings.reward_prior))
    loggers = policies(logging_experiment(params), catalog)
    # A recommender of one's own gives no distribution over its candidates, so no estimator can weigh it.
    arms = [arm for arm in leaderboard_arms(params, layout.REFERENCE_RECS) if not is_custom(arm["recommender"])]
    labels = {arm["name"]: arm["label"] for arm in arms}
    online = online_values(params, labels)
    served = policies({"name": params.leaderboard.experiment, "arms": service_arms(arms)}, catalog)
    targets = {labels[arm]: target for arm, (_, target) in served.items()}
    pairs = [(arm, label) for arm in loggers for label in targets]
    global _JUDGED
    logged = {arm: decisions[decisions["arm"] == arm].reset_index(drop=True) for arm in loggers}
    _JUDGED = _Judged(logged, reward_model, loggers, targets, online, int(settings.replicates))
    try:
        rows = _map_in_processes(_judge, pairs, settings.processes)
    finally:
        _JUDGED = None
    estimates: dict[str, dict] = {}
    for (arm, label), row in zip(pairs, rows, strict=True):
        estimates.setdefault(loggers[arm][0], {})[label] = row
    truths = [online[label]["per_step"] for label in targets]
    correlation = {
        logger: {
            name: rank_correlation([rows[label][name]["value"] for label in targets], truths) for name in ESTIMATORS
        }
        for logger, rows in estimates.items()
    }
    return {
        "logging": {
            "log": str(log_dir),
            "day": logging_day(params),
            "experiment": settings.experiment,
            "loggers": {
                name: {"arm": arm, "decisions": int((decisions["arm"] == arm).sum())}
                for arm, (name, _) in loggers.items()
            },
        },
        "reward_model": f"per-track mean listen time of the log, shrunk by {settings.reward_prior:g} decisions",
        "replicates": int(settings.replicates),
        "online": {
            label: {key: _rounded(value) if isinstance(value, float) else value for key, value in numbers.items()}
            for label, numbers in online.items()
        },
        "estimates": estimates,
        "rank_correlation": correlation,
    }


def ope_rows(document: dict) -> pd.DataFrame:
    """plots/ope.csv: one row per (logger, recommender, estimator) with the online value beside it."""
    rows = []
    for logger, targets in document["estimates"].items():
        for label, row in targets.items():
            for name in ESTIMATORS:
                rows.append(
                    {
                        "logger": logger,
                        "recommender": label,
                        "estimator": name,
                        "online": document["online"][label]["per_step"],
                        "support": row["support"],
                        **{key: row[name][key] for key in ("value", "ci_low", "ci_high", "bias", "coverage")},
                    }
                )
    return pd.DataFrame(rows)


def ope_figure(document: dict):
    """One panel per logging policy: each recommender's estimates (with intervals) beside its online value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loggers = list(document["estimates"])
    labels = list(document["online"])
    figure, axes = plt.subplots(1, len(loggers), figsize=(7 * len(loggers), 0.55 * len(labels) + 1.8), sharey=True)
    axes = np.atleast_1d(axes)
    offsets = {"online": -0.3, "IPS": -0.1, "SNIPS": 0.1, "DR": 0.3}
    colours = {"online": "black", "IPS": "tab:blue", "SNIPS": "tab:orange", "DR": "tab:green"}
    limit = 1.05  # rewards are listen-time shares in [0, 1]; an estimate beyond is drawn at the edge as a triangle
    for axis, logger in zip(axes, loggers):
        for position, label in enumerate(labels):
            online = document["online"][label]
            points = {"online": (online["per_step"], online["ci_low"], online["ci_high"])}
            for name in ESTIMATORS:
                found = document["estimates"][logger][label][name]
                points[name] = (found["value"], found["ci_low"], found["ci_high"])
            for name, (value, low, high) in points.items():
                if value is None:
                    continue
                y = position + offsets[name]
                shown, low, high = (min(max(x, -0.05), limit) for x in (value, low, high))
                marker = "D" if name == "online" else (">" if value > limit else "o")
                axis.errorbar(
                    shown,
                    y,
                    xerr=[[max(shown - low, 0.0)], [max(high - shown, 0.0)]],
                    fmt=marker,
                    color=colours[name],
                    capsize=3,
                    markersize=5,
                    label=name if position == 0 else None,
                )
            support = document["estimates"][logger][label]["support"]
            if support is not None and support < 0.99:
                axis.text(limit, position, f" support {support:.0%}", va="center", fontsize=8, color="tab:red")
        axis.set_yticks(range(len(labels)), labels)
        axis.invert_yaxis()
        axis.set_xlim(-0.05, limit + 0.25)
        axis.axvline(0, color="gray", linewidth=0.6)
        axis.set(title=f"logged by {logger}", xlabel="listen time of the next track (mean per decision)")
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=4)
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    params = load_params(parser.parse_args(argv).params)
    document = evaluate(params)
    write_metrics("ope", document)
    write_plot("ope", ope_rows(document))
    save_figure(ope_figure(document), "ope")
    for logger, rho in document["rank_correlation"].items():
        ranks = ", ".join(f"{name} {value:+.2f}" if value is not None else f"{name} n/a" for name, value in rho.items())
        print(f"ope: logged by {logger}: rank correlation of the estimates with the online values: {ranks}")


if __name__ == "__main__":
    main()
