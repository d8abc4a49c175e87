"""Stage `analyze`: the course's week-1 analysis of the homework A/B log (notebooks/ab_analysis.ipynb).

Writes metrics/ab.json (the headline: effects on time and tracks per session with their Welch intervals and
detectable effect, the SRM verdict), plots/ab_effects.csv, and build/analysis/ (the full table with p-values and
Holm, and latency.json when the log measured latency: the pipeline's service runs on the simulated clock and
measures none, and a log on the wall clock depends on the machine's load, so latency stays out of the metrics).

With `ab.cuped`, metrics/ab.json also holds the CUPED table (`cuped`): the covariate is each user's same metric in
the loop of days' last round, a day of the same users that the test's assignment never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import atomic_output_dir, write_json, write_metrics, write_plot
from botify_lab.pipeline.params import Params, round_names
from botify_lab.research.ab import (
    ab_effects,
    ab_metrics_json,
    arm_statistics,
    arm_totals,
    covariate_moments,
    cuped_document,
    effect_rows,
    headline,
    latency_metrics_json,
    srm_check,
    user_metrics,
)
from botify_lab.research.logs import read_log, sessionize


@dataclass
class AbAnalysis:
    experiment: str
    alpha: float
    events: pd.DataFrame
    sessions: pd.DataFrame
    metrics: pd.DataFrame
    effects: pd.DataFrame
    srm: dict
    moments: pd.DataFrame | None = None  # CUPED's per-arm moments, when a covariate log was given


def analyze_log(
    log_dir,
    experiment: str,
    *,
    alpha: float,
    power: float,
    srm_alpha: float,
    covariate_log=None,
    covariate_experiment: str | None = None,
) -> AbAnalysis:
    """Sessionize a log, aggregate per (user, arm) and compare each treatment with control C; with `covariate_log`
    (an earlier log, its users' arms in `covariate_experiment`), CUPED's moments too."""
    events = read_log(log_dir)
    sessions = sessionize(events)
    metrics = user_metrics(sessions, experiment)
    effects = ab_effects(metrics, alpha=alpha, power=power)
    srm = srm_check(metrics["arm"].value_counts(), alpha=srm_alpha)
    moments = None
    if covariate_log is not None:
        earlier = user_metrics(sessionize(read_log(covariate_log)), covariate_experiment)
        moments = covariate_moments(metrics, earlier)
    return AbAnalysis(experiment, alpha, events, sessions, metrics, effects, srm, moments)


def cuped_log(params: Params):
    """The covariate's log: the loop of days' last round (None with `ab.cuped` off)."""
    return layout.round_log(round_names(params)[-1]) if params.ab.cuped else None


def analyze(params: Params):
    """The homework A/B log through the engine of `analysis.engine`; writes the metrics, the plot and the details.

    pandas returns an `AbAnalysis` (events, sessions and user metrics in memory); Spark returns only per-arm numbers
    (`botify_lab.research.spark`), finished by the same statistics code, so metrics/ab.json is the same.
    """
    settings, experiment = params.ab, params.simulate.experiment
    covariate = {"covariate_log": cuped_log(params), "covariate_experiment": params.collect.experiment}
    if params.analysis.engine == "spark":
        from botify_lab.research.spark import analyze_log_spark

        analysis = analyze_log_spark(
            layout.SIMULATE_LOG,
            experiment,
            alpha=settings.alpha,
            power=settings.power,
            srm_alpha=settings.srm_alpha,
            master=params.spark.master,
            **covariate,
        )
        document, latency = analysis.ab_json(), analysis.latency_json()
    else:
        analysis = analyze_log(
            layout.SIMULATE_LOG,
            experiment,
            alpha=settings.alpha,
            power=settings.power,
            srm_alpha=settings.srm_alpha,
            **covariate,
        )
        document = ab_metrics_json(
            analysis.effects,
            experiment=analysis.experiment,
            totals=arm_totals(analysis.metrics),
            srm=analysis.srm,
            alpha=analysis.alpha,
        )
        latency = latency_metrics_json(arm_totals(analysis.metrics), arm_statistics(analysis.metrics), analysis.effects)
    if analysis.moments is not None:
        document["cuped"] = cuped_document(
            analysis.moments,
            covariate=f"each user's same metric in {covariate['covariate_log']}",
            alpha=settings.alpha,
            power=settings.power,
        )
    with atomic_output_dir(layout.ANALYSIS) as scratch:
        write_json(scratch / "ab.json", document)
        if any(arm["mean_request_latency_ms"] for arm in latency["arms"].values()):
            write_json(scratch / "latency.json", latency)
    write_metrics("ab", headline(document))
    write_plot("ab_effects", effect_rows(document))
    return analysis
