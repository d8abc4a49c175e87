"""Stage `analyze`: the course's week-1 analysis of the homework A/B log (notebooks/ab_analysis.ipynb).

Writes metrics/ab.json (effects with Welch intervals, SRM check, Holm, detectable effect) and metrics/latency.json
(latency apart, since it depends on the machine's load).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import write_metrics
from botify_lab.research.ab import ab_effects, ab_metrics_json, latency_metrics_json, srm_check, user_metrics
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


def analyze_log(log_dir, experiment: str, *, alpha: float, power: float, srm_alpha: float) -> AbAnalysis:
    """Sessionize a log, aggregate per (user, arm) and compare each treatment with control C."""
    events = read_log(log_dir)
    sessions = sessionize(events)
    metrics = user_metrics(sessions, experiment)
    effects = ab_effects(metrics, alpha=alpha, power=power)
    srm = srm_check(metrics["arm"].value_counts(), alpha=srm_alpha)
    return AbAnalysis(experiment, alpha, events, sessions, metrics, effects, srm)


def analyze(params: dict) -> AbAnalysis:
    settings = params["ab"]
    analysis = analyze_log(layout.SIMULATE_LOG, params["simulate"]["experiment"], alpha=settings["alpha"],
                           power=settings["power"], srm_alpha=settings["srm_alpha"])
    write_metrics("ab", ab_metrics_json(analysis.effects, experiment=analysis.experiment, metrics=analysis.metrics,
                                        srm=analysis.srm, alpha=analysis.alpha))
    write_metrics("latency", latency_metrics_json(analysis.metrics, analysis.effects))
    return analysis
