"""The course's A/B analysis: user-level metrics, Welch intervals per treatment, plus SRM and Holm checks.

The course's week-1 recipe: sessionize the log per user, sum each user's sessions per arm, take per-user means
(time and tracks per session, latency per request), and compare each treatment arm with control C.

Effects and their bounds are reported in percent of the control mean, as the course's week-1 table did. The
interval is Welch's t interval with Welch-Satterthwaite degrees of freedom (scipy), `significant` when it excludes
0. With several treatments, Holm-adjusted p-values (per metric, across treatments) say which effects survive the
multiple comparison; `significant` itself stays the course's unadjusted verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.stats.multitest import multipletests

METRICS = ("time", "sessions", "mean_request_latency", "mean_tracks_per_session", "mean_time_per_session")
LATENCY_METRICS = ("mean_request_latency",)
LOWER_IS_BETTER = frozenset(LATENCY_METRICS)  # a rise in latency is a loss, so it is coloured red
EFFECT_COLUMNS = (
    "treatment",
    "metric",
    "control_n",
    "treatment_n",
    "control_mean",
    "treatment_mean",
    "effect",
    "lower",
    "upper",
    "significant",
    "p_value",
    "p_holm",
    "significant_holm",
    "mde",
)
COURSE_COLUMNS = ("control_mean", "treatment_mean", "effect", "upper", "lower", "significant")
# The power at which the minimum detectable effect is reported, and the customary sample-ratio-mismatch threshold
# (a real mismatch invalidates the whole test, so it is strict); params.yaml `ab:` passes both in the pipeline.
DEFAULT_POWER = 0.8
DEFAULT_SRM_ALPHA = 0.001


def arm_order(arms, control: str = "C") -> list[str]:
    """Control first, then treatments in natural order (T2 before T10)."""
    return sorted(set(arms), key=lambda arm: (arm != control, len(arm), arm))


def user_metrics(sessions: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """One row per (user, arm) with sums over their sessions and the per-session/per-request means.

    Columns: user, arm, sessions, time, tracks, latency (ms), mean_request_latency (ms per request),
    mean_tracks_per_session, mean_time_per_session. Sessions logged without the experiment are left out.
    """
    if experiment not in sessions.columns:
        raise KeyError(f"sessions have no arm column for experiment {experiment!r}")
    labelled = sessions[sessions[experiment].notna()]
    grouped = labelled.groupby(["user", experiment], sort=True)
    metrics = (
        pd.DataFrame(
            {
                "sessions": grouped.size(),
                "time": grouped["time"].sum(),
                "tracks": grouped["tracks"].sum(),
                "latency": grouped["latency"].sum(),
            }
        )
        .reset_index()
        .rename(columns={experiment: "arm"})
    )
    metrics["mean_request_latency"] = metrics["latency"] / metrics["tracks"]
    metrics["mean_tracks_per_session"] = metrics["tracks"] / metrics["sessions"]
    metrics["mean_time_per_session"] = metrics["time"] / metrics["sessions"]
    return metrics


def arm_statistics(metrics: pd.DataFrame, metric_names: Sequence[str] = METRICS, control: str = "C") -> pd.DataFrame:
    """Per arm and metric, the count, mean and variance (ddof 1) of the user-level values."""
    rows = []
    for arm in arm_order(metrics["arm"], control):
        values = metrics[metrics["arm"] == arm]
        for metric in metric_names:
            column = values[metric]
            rows.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "count": len(column),
                    "mean": column.mean(),
                    "variance": column.var(ddof=1),
                }
            )
    return pd.DataFrame(rows)


def measured_metrics(metric_names: Sequence[str], arm_means: Mapping[str, Sequence[float]]) -> list[str]:
    """The metrics with something to compare: latency that is 0 in every arm was not measured (a service on the
    simulated clock logs none), so it gets no row rather than a 0/0 effect."""
    return [
        metric
        for metric in metric_names
        if metric not in LATENCY_METRICS or any(mean != 0 for mean in arm_means[metric])
    ]


def mean_interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, lower, upper): the t interval of one sample's mean (NaN bounds with fewer than 2 values)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(1 - alpha / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def _percent(value: float, base: float) -> float:
    return 100.0 * value / base if base != 0 and math.isfinite(base) else math.nan


def ab_effects(
    metrics: pd.DataFrame,
    control: str = "C",
    alpha: float = 0.05,
    metric_names: Sequence[str] = METRICS,
    power: float = DEFAULT_POWER,
) -> pd.DataFrame:
    """Per treatment and metric, the effect vs control with its Welch interval, in percent, from the users' rows.

    Columns: treatment, metric, control_n, treatment_n (users), control_mean, treatment_mean, effect, lower,
    upper (percent of control_mean), significant (interval excludes 0), p_value, p_holm (Holm across the
    treatments of one metric; equals p_value with one treatment), significant_holm (p_holm < alpha), mde (the
    minimum effect detectable with the given power at this alpha, percent of control_mean). Computed from each
    arm's count, mean and variance, the one path every engine takes (`ab_effects_from_statistics`).
    """
    return ab_effects_from_statistics(
        arm_statistics(metrics, metric_names, control), control, alpha, metric_names, power
    )


def holm(p_values: pd.Series, alpha: float) -> pd.Series:
    """Holm-adjusted p-values across the given tests; NaN stays NaN (a test that was not run)."""
    adjusted = pd.Series(np.nan, index=p_values.index)
    tested = p_values.notna()
    if tested.any():
        adjusted[tested] = multipletests(p_values[tested], alpha=alpha, method="holm")[1]
    return adjusted


def with_holm(effects: pd.DataFrame, metric_names: Sequence[str], alpha: float) -> pd.DataFrame:
    """Add the Holm-adjusted p-values (per metric, across treatments) and their verdict; the columns in order."""
    effects["p_holm"] = np.nan
    for metric in metric_names:
        rows_of_metric = effects["metric"] == metric
        effects.loc[rows_of_metric, "p_holm"] = holm(effects.loc[rows_of_metric, "p_value"], alpha)
    effects["significant_holm"] = effects["p_holm"] < alpha
    return effects[list(EFFECT_COLUMNS)]


def srm_check(
    arm_counts: Mapping[str, int] | pd.Series,
    expected_shares: Mapping[str, float] | None = None,
    alpha: float = DEFAULT_SRM_ALPHA,
) -> dict:
    """Sample-ratio mismatch: chi-square test of the users per arm against the designed split (equal by default).

    Arms come back in natural order (C, T1, T2, ...) whatever order the counts arrive in, e.g. value_counts().
    A hash split assigns users, so user counts (not sessions) are what the design fixes. `mismatch` flags
    p < alpha; the customary SRM threshold is 0.001 because a real mismatch invalidates the whole test.
    """
    counts = pd.Series(dict(arm_counts), dtype=float)
    if len(counts) < 2 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"need non-negative counts for at least two arms, got {dict(arm_counts)}")
    arms = arm_order(counts.index)
    counts = counts[arms]
    if expected_shares is None:
        shares = pd.Series(1.0 / len(arms), index=arms)
    else:
        shares = pd.Series(dict(expected_shares), dtype=float)
        if set(shares.index) != set(arms) or (shares <= 0).any():
            raise ValueError(f"expected shares must be positive and name exactly the arms {arms}")
        shares = shares[arms] / shares.sum()
    expected = shares * counts.sum()
    statistic, p_value = stats.chisquare(counts.to_numpy(), expected.to_numpy())
    return {
        "arms": arms,
        "counts": [int(count) for count in counts],
        "expected": [float(value) for value in expected],
        "chi2": float(statistic),
        "dof": len(arms) - 1,
        "p_value": float(p_value),
        "alpha": alpha,
        "mismatch": bool(p_value < alpha),
    }


GAIN_COLOUR, LOSS_COLOUR = "#b7e1b0", "#f4b6b6"


def effect_colour(metric: str, effect: float, significant: bool) -> str | None:
    """The course's colours: green for a significant gain, red for a significant loss (lower latency is a gain)."""
    if not significant:
        return None
    gain = effect < 0 if metric in LOWER_IS_BETTER else effect > 0
    return GAIN_COLOUR if gain else LOSS_COLOUR


def figure_colour(effect: float, significant: bool) -> str:
    """A figure's mark for an effect on a larger-is-better metric: green for a significant gain, red for a
    significant loss, grey otherwise (the course's table colours, in matplotlib's palette)."""
    if not significant:
        return "tab:gray"
    return "tab:green" if effect > 0 else "tab:red"


def effects_table(effects: pd.DataFrame):
    """The course's coloured table: green when significantly better, red when significantly worse."""
    table = effects.set_index(["treatment", "metric"])[list(COURSE_COLUMNS)]

    def colour(row: pd.Series) -> list[str]:
        shade = effect_colour(row.name[1], row["effect"], row["significant"])
        return [f"background-color: {shade}" if shade else ""] * len(row)

    return table.style.apply(colour, axis=1).format(
        {
            "control_mean": "{:.4f}",
            "treatment_mean": "{:.4f}",
            "effect": "{:+.2f}%",
            "upper": "{:+.2f}%",
            "lower": "{:+.2f}%",
        }
    )


def _clean(value, digits: int):
    """A JSON-safe scalar: Python types, rounded floats, None instead of NaN/inf."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), digits) if math.isfinite(value) else None
    return value


def _effects_dict(effects: pd.DataFrame, digits: int) -> dict:
    fields = [column for column in EFFECT_COLUMNS if column not in ("treatment", "metric")]
    result: dict = {}
    for row in effects.itertuples(index=False):
        entry = row._asdict()
        result.setdefault(entry["treatment"], {})[entry["metric"]] = {
            field: _clean(entry[field], digits) for field in fields
        }
    return result


def _ab_document(
    effects: pd.DataFrame, experiment: str, arms: dict | None, srm: dict | None, control: str, alpha: float, digits: int
) -> dict:
    """metrics/ab.json's layout, whichever engine counted the arms' users and sessions."""
    document: dict = {"experiment": experiment, "control": control, "alpha": alpha}
    if arms is not None:
        document["arms"] = arms
    if srm is not None:
        document["srm"] = {
            key: _clean(value, digits) if not isinstance(value, list) else [_clean(item, digits) for item in value]
            for key, value in srm.items()
        }
    document["effects"] = _effects_dict(effects[~effects["metric"].isin(LATENCY_METRICS)], digits)
    return document


HEADLINE_METRICS = ("mean_time_per_session", "mean_tracks_per_session")
HEADLINE_FIELDS = ("control_mean", "treatment_mean", "effect", "lower", "upper", "significant", "mde")


def headline(
    document: dict, metrics: Sequence[str] = HEADLINE_METRICS, fields: Sequence[str] = HEADLINE_FIELDS
) -> dict:
    """The few numbers of an A/B document (from `ab_metrics_json`) worth a column in `dvc exp show`.

    The full document (every metric, p-values, user counts, the SRM counts) stays beside it as a detail file.
    """
    short = {key: value for key, value in document.items() if key not in ("srm", "effects", "cuped")}
    if "srm" in document:
        short["srm"] = {"p_value": document["srm"]["p_value"], "mismatch": document["srm"]["mismatch"]}
    short["effects"] = {
        treatment: {
            metric: {field: values[field] for field in fields}
            for metric, values in by_metric.items()
            if metric in metrics
        }
        for treatment, by_metric in document["effects"].items()
    }
    if "cuped" in document:  # already short: the headline metrics' adjusted effects and the variance removed
        short["cuped"] = document["cuped"]
    return short


def effect_rows(document: dict, metrics: Sequence[str] = HEADLINE_METRICS) -> pd.DataFrame:
    """One row per treatment and metric (effect with its interval, percent of control): a DVC plot's data."""
    return pd.DataFrame(
        [
            {
                "treatment": treatment,
                "metric": metric,
                "label": f"{treatment} {metric}",
                "effect": values["effect"],
                "lower": values["lower"],
                "upper": values["upper"],
                "significant": values["significant"],
            }
            for treatment, by_metric in document["effects"].items()
            for metric, values in by_metric.items()
            if metric in metrics
        ]
    )


# ---------------------------------------------------------------------------------------------------------------
# The same table from per-arm aggregates (count, mean, variance), so an engine that keeps the users elsewhere
# (Spark) sends only a few numbers per arm to the driver, and both engines finish with this one code path.

STATISTICS_COLUMNS = ("arm", "metric", "count", "mean", "variance")
TOTALS_COLUMNS = ("arm", "users", "sessions", "tracks", "latency")


def welch_from_statistics(
    treatment_mean: float,
    treatment_variance: float,
    treatment_n: int,
    control_mean: float,
    control_variance: float,
    control_n: int,
    alpha: float = 0.05,
    power: float = DEFAULT_POWER,
) -> tuple[float, float, float, float, float]:
    """(difference of means, lower, upper, two-sided p, minimum detectable difference) from each arm's count, mean
    and variance (ddof 1): what Welch's test gives on the raw samples.

    Welch's t with Welch-Satterthwaite degrees of freedom (scipy's `ttest_ind_from_stats`); the interval is
    scipy's `TtestResult.confidence_interval` computed the same way (t quantile x standard error + difference).
    NaNs when an arm has fewer than 2 users, as on raw samples.
    """
    difference = treatment_mean - control_mean if treatment_n and control_n else math.nan
    if treatment_n < 2 or control_n < 2:
        return difference, math.nan, math.nan, math.nan, math.nan
    result = stats.ttest_ind_from_stats(
        treatment_mean,
        math.sqrt(treatment_variance),
        treatment_n,
        control_mean,
        math.sqrt(control_variance),
        control_n,
        equal_var=False,
    )
    share_t = treatment_variance / treatment_n
    share_c = control_variance / control_n
    with np.errstate(divide="ignore", invalid="ignore"):
        dof = np.float64(share_t + share_c) ** 2 / (share_t**2 / (treatment_n - 1) + share_c**2 / (control_n - 1))
    dof_for_interval = 1.0 if np.isnan(dof) else float(dof)  # scipy's convention when both variances are 0
    standard_error = math.sqrt(share_t + share_c)
    low_t, high_t = special.stdtrit(dof_for_interval, np.array([alpha / 2, 1 - alpha / 2]))
    low = float(low_t * standard_error + difference)
    high = float(high_t * standard_error + difference)
    if standard_error == 0:
        mde = 0.0
    else:
        mde = float((stats.t.ppf(1 - alpha / 2, dof) + stats.t.ppf(power, dof)) * standard_error)
    return float(difference), low, high, float(result.pvalue), mde


def ab_effects_from_statistics(
    statistics: pd.DataFrame,
    control: str = "C",
    alpha: float = 0.05,
    metric_names: Sequence[str] = METRICS,
    power: float = DEFAULT_POWER,
) -> pd.DataFrame:
    """`ab_effects` from per-arm aggregates: rows of (arm, metric, count, mean, variance) as `arm_statistics` gives
    (or an engine that keeps the users elsewhere); the tests hold it to scipy's Welch test on raw samples."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    arms = arm_order(statistics["arm"], control)
    if control not in arms:
        raise ValueError(f"control arm {control!r} not among the arms {arms}")
    treatments = [arm for arm in arms if arm != control]
    if not treatments:
        raise ValueError(f"no treatment arm besides the control {control!r}")
    table = statistics.set_index(["arm", "metric"])
    metric_names = measured_metrics(
        metric_names, {metric: [float(table.loc[(arm, metric), "mean"]) for arm in arms] for metric in metric_names}
    )
    rows = []
    for treatment in treatments:
        for metric in metric_names:
            c, t = table.loc[(control, metric)], table.loc[(treatment, metric)]
            control_n, treatment_n = int(c["count"]), int(t["count"])
            control_mean, treatment_mean = float(c["mean"]), float(t["mean"])
            difference, low, high, p_value, mde = welch_from_statistics(
                treatment_mean,
                float(t["variance"]),
                treatment_n,
                control_mean,
                float(c["variance"]),
                control_n,
                alpha,
                power,
            )
            lower, upper = _percent(low, control_mean), _percent(high, control_mean)
            rows.append(
                {
                    "treatment": treatment,
                    "metric": metric,
                    "control_n": control_n,
                    "treatment_n": treatment_n,
                    "control_mean": control_mean,
                    "treatment_mean": treatment_mean,
                    "effect": _percent(difference, control_mean),
                    "lower": lower,
                    "upper": upper,
                    "significant": bool(lower > 0 or upper < 0),
                    "p_value": p_value,
                    "mde": _percent(mde, control_mean),
                }
            )
    return with_holm(pd.DataFrame(rows), metric_names, alpha)


def arm_totals(metrics: pd.DataFrame, control: str = "C") -> pd.DataFrame:
    """Per arm: users, and the sums of sessions, tracks (requests) and latency (ms) over its users."""
    rows = []
    for arm in arm_order(metrics["arm"], control):
        values = metrics[metrics["arm"] == arm]
        rows.append(
            {
                "arm": arm,
                "users": len(values),
                "sessions": int(values["sessions"].sum()),
                "tracks": int(values["tracks"].sum()),
                "latency": float(values["latency"].sum()),
            }
        )
    return pd.DataFrame(rows, columns=list(TOTALS_COLUMNS))


def ab_metrics_json(
    effects: pd.DataFrame,
    *,
    experiment: str,
    totals: pd.DataFrame | None = None,
    srm: dict | None = None,
    control: str = "C",
    alpha: float = 0.05,
    digits: int = 6,
) -> dict:
    """The content of metrics/ab.json: arms (users and sessions, from `arm_totals`-shaped rows), SRM check and
    effects, latency left out.

    Latency depends on the machine's load, so keeping it out (see `latency_metrics_json`) lets two runs of the
    same seeded experiment produce byte-identical files. Keys keep a fixed order; floats are rounded; no NaN.
    """
    arms = None
    if totals is not None:
        by_arm = totals.set_index("arm")
        arms = {
            arm: {"users": int(by_arm.loc[arm, "users"]), "sessions": int(by_arm.loc[arm, "sessions"])}
            for arm in arm_order(by_arm.index, control)
        }
    return _ab_document(effects, experiment, arms, srm, control, alpha, digits)


def latency_metrics_json(
    totals: pd.DataFrame, statistics: pd.DataFrame, effects: pd.DataFrame, *, control: str = "C", digits: int = 6
) -> dict:
    """The content of metrics/latency.json: per arm request latency (ms) and the latency effects, from `arm_totals`
    and `arm_statistics`-shaped rows."""
    by_arm = totals.set_index("arm")
    user_means = statistics[statistics["metric"] == "mean_request_latency"].set_index("arm")["mean"]
    arms = {}
    for arm in arm_order(by_arm.index, control):
        requests = int(by_arm.loc[arm, "tracks"])
        arms[arm] = {
            "requests": requests,
            "mean_request_latency_ms": _clean(float(by_arm.loc[arm, "latency"]) / requests, digits),
            "user_mean_request_latency_ms": _clean(float(user_means[arm]), digits),
        }
    return {"arms": arms, "effects": _effects_dict(effects[effects["metric"].isin(LATENCY_METRICS)], digits)}


# ---------------------------------------------------------------------------------------------------------------
# CUPED: each user's same metric from a log the test never touched (an earlier day) as a covariate. The adjusted
# metric y - theta * (x - mean x), theta = cov(x, y) / var(x) over all the test's users, keeps each arm's expected
# difference and loses the share of the variance the covariate explains, so the interval narrows and the detectable
# effect shrinks. Computed from per-arm moments, so both engines send only a few numbers per arm to the driver.

CUPED_METRICS = ("mean_time_per_session", "mean_tracks_per_session")
MOMENT_COLUMNS = (
    "arm",
    "metric",
    "count",
    "mean",
    "variance",
    "covariate_mean",
    "covariate_variance",
    "covariance",
    "covered",
)
COVARIATE_SUFFIX = "_before"


def covariate_moments(
    metrics: pd.DataFrame,
    covariates: pd.DataFrame,
    metric_names: Sequence[str] = CUPED_METRICS,
    control: str = "C",
) -> pd.DataFrame:
    """Per arm and metric, the moments CUPED needs (MOMENT_COLUMNS; variances and covariance ddof 1).

    `covariates` holds one row per user with the same metric columns, from the earlier log. A test user absent
    from it takes the covariate's mean over the test users present (so is not adjusted); `covered` counts the
    present ones.
    """
    before = covariates[["user", *metric_names]].rename(columns={m: m + COVARIATE_SUFFIX for m in metric_names})
    joined = metrics.merge(before, on="user", how="left", validate="many_to_one")
    rows = []
    for metric in metric_names:
        known = joined[metric + COVARIATE_SUFFIX]
        covariate = known.fillna(known.mean())
        for arm in arm_order(joined["arm"], control):
            in_arm = (joined["arm"] == arm).to_numpy()
            y, x = joined.loc[in_arm, metric].to_numpy(float), covariate[in_arm].to_numpy(float)
            rows.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "count": len(y),
                    "mean": y.mean(),
                    "variance": y.var(ddof=1) if len(y) > 1 else math.nan,
                    "covariate_mean": x.mean(),
                    "covariate_variance": x.var(ddof=1) if len(x) > 1 else math.nan,
                    "covariance": float(np.cov(x, y, ddof=1)[0, 1]) if len(y) > 1 else math.nan,
                    "covered": int(known[in_arm].notna().sum()),
                }
            )
    return pd.DataFrame(rows, columns=list(MOMENT_COLUMNS))


def cuped_statistics(moments: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The adjusted metric's per-arm (count, mean, variance), `arm_statistics`-shaped for the Welch table, and per
    metric theta, the share of the (within-arm) variance removed and the share of users with a covariate."""
    statistics, summary = [], {}
    for metric, rows in moments.groupby("metric", sort=False):
        n, my, mx = rows["count"].to_numpy(float), rows["mean"].to_numpy(float), rows["covariate_mean"].to_numpy(float)
        vy, vx, cxy = (rows[c].to_numpy(float) for c in ("variance", "covariate_variance", "covariance"))
        total_x, total_y = (n * mx).sum() / n.sum(), (n * my).sum() / n.sum()
        # theta over all users: total covariance over total variance (within-arm sums plus the between-arm terms)
        spread_x = ((n - 1) * vx).sum() + (n * (mx - total_x) ** 2).sum()
        theta = (((n - 1) * cxy).sum() + (n * (mx - total_x) * (my - total_y)).sum()) / spread_x if spread_x else 0.0
        adjusted_variance = vy - 2 * theta * cxy + theta**2 * vx
        for index, arm in enumerate(rows["arm"]):
            statistics.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "count": int(n[index]),
                    "mean": my[index] - theta * (mx[index] - total_x),
                    "variance": adjusted_variance[index],
                }
            )
        within = ((n - 1) * vy).sum()
        summary[metric] = {
            "theta": float(theta),
            "variance_reduction": float(1 - ((n - 1) * adjusted_variance).sum() / within) if within else 0.0,
            "covered_share": float(rows["covered"].sum() / n.sum()),
        }
    return pd.DataFrame(statistics, columns=list(STATISTICS_COLUMNS)), summary


def covariate_balance(moments: pd.DataFrame, control: str = "C") -> dict:
    """Per treatment and metric, Welch's p-value of the covariate's difference from control. The covariate must not
    depend on the arm: a tiny p says it does (an earlier log of the same experiment, whose users sat in the same
    arms), and CUPED would then subtract part of the effect itself."""
    balance: dict = {}
    for metric, rows in moments.groupby("metric", sort=False):
        by_arm = rows.set_index("arm")
        c = by_arm.loc[control]
        for arm in arm_order(by_arm.index, control)[1:]:
            t = by_arm.loc[arm]
            p_value = welch_from_statistics(
                t["covariate_mean"],
                t["covariate_variance"],
                int(t["count"]),
                c["covariate_mean"],
                c["covariate_variance"],
                int(c["count"]),
            )[3]
            balance.setdefault(arm, {})[metric] = p_value
    return balance


def cuped_document(
    moments: pd.DataFrame,
    *,
    covariate: str,
    control: str = "C",
    alpha: float = 0.05,
    power: float = DEFAULT_POWER,
    balance_alpha: float = DEFAULT_SRM_ALPHA,
    digits: int = 6,
) -> dict:
    """metrics/ab.json's `cuped` block: where the covariate came from, per metric theta, the variance removed and
    the users covered; per treatment the adjusted effects with their Welch intervals and detectable effect; and
    whether the covariate is balanced across the arms (`balanced`: no Welch p-value of a covariate's difference
    below `balance_alpha`, the threshold of the sample-ratio check; `balance`: those p-values)."""
    statistics, summary = cuped_statistics(moments)
    effects = ab_effects_from_statistics(statistics, control, alpha, list(summary), power)
    balance = covariate_balance(moments, control)
    fields = ("effect", "lower", "upper", "significant", "mde")
    return {
        "covariate": covariate,
        "balanced": all(p >= balance_alpha for by_metric in balance.values() for p in by_metric.values() if p == p),
        "metrics": {
            metric: {key: _clean(value, digits) for key, value in numbers.items()}
            for metric, numbers in summary.items()
        },
        "effects": {
            treatment: {
                metric: {field: values[field] for field in fields}
                | {"covariate_balance_p": _clean(balance[treatment][metric], digits)}
                for metric, values in by_metric.items()
            }
            for treatment, by_metric in _effects_dict(effects, digits).items()
        },
    }
