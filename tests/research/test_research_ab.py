"""The course's week-1 A/B analysis: user metrics, the Welch interval checked by hand, Holm, SRM and the outputs."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pandas as pd
import pytest
from scipy import stats

from botify_lab.research import ab, logs

from .research_helpers import event, write_log


def metrics_frame(values_by_arm: dict[str, list[float]], metric: str = "mean_time_per_session") -> pd.DataFrame:
    rows = [
        {"user": index, "arm": arm, metric: value}
        for arm, values in values_by_arm.items()
        for index, value in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_user_metrics_follow_the_course_recipe(tmp_path):
    rows = []
    for user, arm, sessions in ((1, "C", [[1.0, 0.5], [1.0]]), (2, "T1", [[1.0, 0.2, 0.3]])):
        stamp = user * 100
        for times in sessions:
            for position, time in enumerate(times):
                stamp += 1
                message = "last" if position == len(times) - 1 else "next"
                rows.append(event(message, stamp, user, position, time, latency=0.002, experiments={"HW": arm}))
    write_log(tmp_path / "log" / "data.json", rows)
    metrics = ab.user_metrics(logs.sessionize(logs.read_log(tmp_path / "log")), "HW")
    assert metrics.columns.tolist() == [
        "user",
        "arm",
        "sessions",
        "time",
        "tracks",
        "latency",
        "mean_request_latency",
        "mean_tracks_per_session",
        "mean_time_per_session",
    ]
    first, second = metrics.to_dict("records")
    assert (first["user"], first["arm"], first["sessions"], first["tracks"]) == (1, "C", 2, 3)
    assert first["time"] == pytest.approx(2.5)
    assert first["latency"] == pytest.approx(6.0)
    assert first["mean_request_latency"] == pytest.approx(2.0)
    assert first["mean_tracks_per_session"] == pytest.approx(1.5)
    assert first["mean_time_per_session"] == pytest.approx(1.25)
    assert (second["arm"], second["sessions"], second["mean_time_per_session"]) == ("T1", 1, pytest.approx(1.5))
    with pytest.raises(KeyError, match="OTHER"):
        ab.user_metrics(logs.sessionize(logs.read_log(tmp_path / "log")), "OTHER")


def welch(treatment, control, alpha=0.05, power=0.8):
    """`welch_from_statistics` on two raw samples' count, mean and variance."""
    treatment, control = np.asarray(treatment, dtype=float), np.asarray(control, dtype=float)
    return ab.welch_from_statistics(
        treatment.mean() if len(treatment) else math.nan,
        treatment.var(ddof=1) if len(treatment) > 1 else math.nan,
        len(treatment),
        control.mean() if len(control) else math.nan,
        control.var(ddof=1) if len(control) > 1 else math.nan,
        len(control),
        alpha,
        power,
    )


def test_welch_interval_matches_the_hand_computation_and_scipy_on_raw_samples():
    treatment = np.array([1.0, 2.0, 3.0, 4.0])
    control = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    # By hand: means 2.5 and 6; variances 5/3 and 10; squared standard error 5/12 + 2 = 29/12.
    standard_error = math.sqrt(29 / 12)
    dof = (29 / 12) ** 2 / ((5 / 12) ** 2 / 3 + 2.0**2 / 4)
    assert dof == pytest.approx(5.52078, abs=1e-5)
    half_width = stats.t.ppf(0.975, dof) * standard_error
    effect, lower, upper, p_value, _ = welch(treatment, control, alpha=0.05)
    assert effect == pytest.approx(-3.5)
    assert lower == pytest.approx(-3.5 - half_width, rel=1e-12)
    assert upper == pytest.approx(-3.5 + half_width, rel=1e-12)
    assert p_value == pytest.approx(2 * stats.t.sf(3.5 / standard_error, dof), rel=1e-12)
    raw = stats.ttest_ind(treatment, control, equal_var=False)
    interval = raw.confidence_interval(confidence_level=0.95)
    assert (lower, upper, p_value) == (
        pytest.approx(interval.low, rel=1e-12),
        pytest.approx(interval.high, rel=1e-12),
        pytest.approx(raw.pvalue, rel=1e-12),
    )
    assert all(math.isnan(value) for value in welch(treatment, control[:1])[1:])


def test_minimum_detectable_effect_by_hand():
    treatment = np.array([1.0, 2.0, 3.0, 4.0])
    control = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    dof = (29 / 12) ** 2 / ((5 / 12) ** 2 / 3 + 2.0**2 / 4)
    expected = (stats.t.ppf(0.975, dof) + stats.t.ppf(0.8, dof)) * math.sqrt(29 / 12)
    assert welch(treatment, control)[4] == pytest.approx(expected, rel=1e-12)
    # Quadrupling the sample about halves the standard error, and the t quantiles shrink with the extra dof.
    bigger = welch(np.tile(treatment, 4), np.tile(control, 4))[4]
    assert 0.35 < bigger / expected < 0.5
    assert math.isnan(welch(treatment, control[:1])[4])


def test_effects_are_percent_of_the_control_mean():
    metrics = metrics_frame({"C": [2.0, 4.0, 6.0, 8.0, 10.0], "T1": [1.0, 2.0, 3.0, 4.0]})
    effects = ab.ab_effects(metrics, metric_names=["mean_time_per_session"])
    row = effects.iloc[0]
    assert list(effects.columns) == list(ab.EFFECT_COLUMNS)
    assert (row["treatment"], row["control_n"], row["treatment_n"]) == ("T1", 5, 4)
    assert (row["control_mean"], row["treatment_mean"]) == (6.0, 2.5)
    _, low, high, _, _ = welch([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0])
    assert row["effect"] == pytest.approx(-3.5 / 6 * 100)
    assert (row["lower"], row["upper"]) == (pytest.approx(low / 6 * 100), pytest.approx(high / 6 * 100))
    assert bool(row["significant"]) == (high < 0)
    assert row["p_holm"] == row["p_value"]  # one treatment: nothing to adjust


def test_course_interval_convention_reproduces_the_published_table():
    """The published table's T1 TopPop(10) row: build ~900 users per arm with the published means and a spread that
    gives the published interval width; the percent-of-control convention must then give 27.4% [19.0, 35.7]."""
    control_mean, treatment_mean, n = 2.152, 2.742, 900
    published_half_width = (35.744 - 19.005) / 2
    assert (35.744 + 19.005) / 2 == pytest.approx(27.374, abs=1e-3)  # the published interval is symmetric
    spread = published_half_width / 100 * control_mean / stats.t.ppf(0.975, 2 * n - 2) / math.sqrt(2 / n)
    unit = np.linspace(-1, 1, n)
    unit = (unit - unit.mean()) / unit.std(ddof=1)
    metrics = metrics_frame({"C": control_mean + spread * unit, "T1": treatment_mean + spread * unit})
    row = ab.ab_effects(metrics, metric_names=["mean_time_per_session"]).iloc[0]
    assert row["effect"] == pytest.approx(27.416, abs=0.01)  # the published 27.374 used unrounded means
    assert row["upper"] - row["effect"] == pytest.approx(published_half_width, rel=1e-6)
    assert row["lower"] == pytest.approx(19.05, abs=0.05) and row["upper"] == pytest.approx(35.79, abs=0.05)
    assert row["significant"]


def test_holm_adjusts_across_treatments_per_metric():
    rng = np.random.default_rng(0)
    metrics = metrics_frame(
        {
            "C": rng.normal(1.0, 1.0, 60),
            "T1": rng.normal(1.5, 1.0, 60),
            "T2": rng.normal(1.1, 1.0, 60),
            "T10": rng.normal(0.6, 1.0, 60),
        }
    )
    effects = ab.ab_effects(metrics, metric_names=["mean_time_per_session"])
    assert effects["treatment"].tolist() == ["T1", "T2", "T10"]
    p = effects["p_value"].to_numpy()
    order = np.argsort(p)
    adjusted = np.minimum(1, np.maximum.accumulate(p[order] * (3 - np.arange(3))))
    expected = np.empty(3)
    expected[order] = adjusted
    assert effects["p_holm"].to_numpy() == pytest.approx(expected)
    assert (effects["significant_holm"] == (effects["p_holm"] < 0.05)).all()


def test_control_must_exist_and_alpha_must_be_a_probability():
    metrics = metrics_frame({"T1": [1.0, 2.0], "T2": [1.0, 3.0]})
    names = ["mean_time_per_session"]
    with pytest.raises(ValueError, match="control arm 'C'"):
        ab.ab_effects(metrics, metric_names=names)
    with pytest.raises(ValueError, match="alpha"):
        ab.ab_effects(metrics, control="T1", alpha=1.5, metric_names=names)
    with pytest.raises(ValueError, match="no treatment"):
        ab.ab_effects(metrics_frame({"C": [1.0, 2.0]}), metric_names=names)


def test_srm_check_against_a_hand_computed_chi_square():
    balanced = ab.srm_check({"C": 1000, "T1": 1010})
    assert not balanced["mismatch"]
    skewed = ab.srm_check({"C": 1000, "T1": 1200})
    assert skewed["chi2"] == pytest.approx(2 * 100**2 / 1100)
    assert skewed["p_value"] == pytest.approx(stats.chi2.sf(2 * 100**2 / 1100, 1))
    assert skewed["mismatch"] and skewed["dof"] == 1
    reordered = ab.srm_check(pd.Series({"T2": 5, "C": 7, "T1": 6}))
    assert (reordered["arms"], reordered["counts"]) == (["C", "T1", "T2"], [7, 6, 5])
    designed = ab.srm_check({"C": 1000, "T1": 2000}, expected_shares={"C": 1, "T1": 2})
    assert designed["chi2"] == pytest.approx(0.0) and not designed["mismatch"]
    with pytest.raises(ValueError, match="exactly the arms"):
        ab.srm_check({"C": 10, "T1": 10}, expected_shares={"C": 1})


def sample_effects():
    rng = np.random.default_rng(1)
    frames = []
    for arm, shift in (("C", 0.0), ("T1", 0.8), ("T2", -0.8), ("T3", 0.0)):
        frame = pd.DataFrame({"user": range(40), "arm": arm})
        for metric in ab.METRICS:
            frame[metric] = rng.normal(5.0 + shift, 1.0, 40)
        frames.append(frame)
    metrics = pd.concat(frames, ignore_index=True)
    metrics["tracks"] = 10
    metrics["latency"] = metrics["mean_request_latency"] * 10
    return metrics, ab.ab_effects(metrics)


def test_course_table_is_coloured_by_sign_and_significance():
    _, effects = sample_effects()
    html = ab.effects_table(effects).to_html()
    assert "#b7e1b0" in html and "#f4b6b6" in html
    table = ab.effects_table(effects).data
    assert list(table.columns) == list(ab.COURSE_COLUMNS)
    assert table.loc[("T1", "mean_time_per_session"), "significant"]


def test_lower_latency_is_the_green_one():
    assert ab.effect_colour("mean_request_latency", -12.0, True) == ab.GAIN_COLOUR
    assert ab.effect_colour("mean_request_latency", 12.0, True) == ab.LOSS_COLOUR
    assert ab.effect_colour("mean_time_per_session", 12.0, True) == ab.GAIN_COLOUR
    assert ab.effect_colour("mean_time_per_session", 12.0, False) is None
    _, effects = sample_effects()
    styles = ab.effects_table(effects)._compute().ctx
    table = ab.effects_table(effects).data
    row = table.index.get_loc(("T2", "mean_request_latency"))  # T2 is lower on every metric, latency included
    assert ("background-color", ab.GAIN_COLOUR) in styles[(row, 0)]


def test_ab_json_is_stable_rounded_and_free_of_nan():
    metrics, effects = sample_effects()
    single = metrics_frame({"C": [1.0, 2.0], "T1": [3.0]})  # one treatment user: no interval
    single["sessions"], single["tracks"], single["latency"] = 1, 2, 0.0
    lonely = ab.ab_effects(single, metric_names=["mean_time_per_session"])
    document = ab.ab_metrics_json(lonely, experiment="HW", totals=ab.arm_totals(single))
    entry = document["effects"]["T1"]["mean_time_per_session"]
    assert entry["lower"] is None and entry["upper"] is None and entry["effect"] == 100.0
    srm = ab.srm_check(metrics.groupby("arm").size())
    document = ab.ab_metrics_json(effects, experiment="HW", totals=ab.arm_totals(metrics), srm=srm, digits=4)
    assert list(document) == ["experiment", "control", "alpha", "arms", "srm", "effects"]
    assert list(document["arms"]) == ["C", "T1", "T2", "T3"]
    assert list(document["effects"]) == ["T1", "T2", "T3"]
    assert "mean_request_latency" not in document["effects"]["T1"]
    assert list(document["effects"]["T1"]) == [m for m in ab.METRICS if m != "mean_request_latency"]
    text = orjson.dumps(document)
    assert b"NaN" not in text and b"Infinity" not in text
    value = document["effects"]["T1"]["time"]["effect"]
    assert value == round(value, 4)
    assert text == orjson.dumps(
        ab.ab_metrics_json(effects, experiment="HW", totals=ab.arm_totals(metrics), srm=srm, digits=4)
    )
    latency = ab.latency_metrics_json(ab.arm_totals(metrics), ab.arm_statistics(metrics), effects)
    assert list(latency["effects"]["T2"]) == ["mean_request_latency"]
    assert latency["arms"]["C"]["requests"] == 400


def cuped_case(seed: int = 11, users: int = 4000, effect: float = 0.05):
    """Users whose metric is mostly their earlier metric plus noise; the treatment adds `effect`; every 10th user
    has no earlier metric."""
    rng = np.random.default_rng(seed)
    earlier = rng.normal(1.0, 0.3, users)
    arm = np.where(rng.random(users) < 0.5, "C", "T1")
    metric = 0.8 * earlier + rng.normal(0, 0.1, users) + np.where(arm == "T1", effect, 0.0)
    metrics = pd.DataFrame({"user": np.arange(users), "arm": arm, "mean_time_per_session": metric})
    covariates = pd.DataFrame({"user": np.arange(users), "mean_time_per_session": earlier})
    return metrics, covariates[covariates["user"] % 10 != 0]


def test_cuped_adjusts_each_user_by_the_pooled_slope_and_narrows_the_interval():
    metrics, covariates = cuped_case()
    names = ("mean_time_per_session",)
    moments = ab.covariate_moments(metrics, covariates, names)
    statistics, summary = ab.cuped_statistics(moments)
    # by hand, on the users' rows: a missing covariate is the present ones' mean; theta is the slope of y on x
    x = metrics.merge(covariates, on="user", how="left", suffixes=("", "_x"))["mean_time_per_session_x"]
    x = x.fillna(x.mean()).to_numpy()
    y = metrics["mean_time_per_session"].to_numpy()
    theta = np.cov(x, y, ddof=1)[0, 1] / x.var(ddof=1)
    assert summary["mean_time_per_session"]["theta"] == pytest.approx(theta, rel=1e-10)
    assert summary["mean_time_per_session"]["covered_share"] == pytest.approx(0.9, abs=0.002)
    adjusted = metrics.assign(mean_time_per_session=y - theta * (x - x.mean()))
    by_hand = ab.ab_effects(adjusted, metric_names=names)
    from_moments = ab.ab_effects_from_statistics(statistics, metric_names=names)
    for column in ("effect", "lower", "upper", "mde", "p_value"):
        assert from_moments[column].iloc[0] == pytest.approx(by_hand[column].iloc[0], rel=1e-9), column
    within = adjusted.groupby("arm")["mean_time_per_session"].var().mean()
    before = metrics.groupby("arm")["mean_time_per_session"].var().mean()
    assert summary["mean_time_per_session"]["variance_reduction"] == pytest.approx(1 - within / before, rel=1e-3)
    # the covariate explains most of the variance of the 90% covered: the interval is less than half as wide
    plain = ab.ab_effects(metrics, metric_names=names)
    assert (by_hand["upper"] - by_hand["lower"]).iloc[0] < 0.5 * (plain["upper"] - plain["lower"]).iloc[0]
    assert by_hand["mde"].iloc[0] < 0.5 * plain["mde"].iloc[0]
    assert by_hand["lower"].iloc[0] < 5.0 / 0.8 < by_hand["upper"].iloc[0]  # the true +0.05 on a mean near 0.8


def test_an_unrelated_covariate_removes_no_variance_and_moves_no_effect():
    metrics, covariates = cuped_case(seed=12)
    covariates = covariates.assign(
        mean_time_per_session=np.random.default_rng(1).permutation(covariates["mean_time_per_session"].to_numpy())
    )
    document = ab.cuped_document(ab.covariate_moments(metrics, covariates, ("mean_time_per_session",)), covariate="x")
    assert abs(document["metrics"]["mean_time_per_session"]["variance_reduction"]) < 0.01
    plain = ab.ab_effects(metrics, metric_names=("mean_time_per_session",))
    adjusted = document["effects"]["T1"]["mean_time_per_session"]
    assert adjusted["effect"] == pytest.approx(plain["effect"].iloc[0], abs=0.3)
    assert document["covariate"] == "x" and document["balanced"]
    assert set(adjusted) == {"effect", "lower", "upper", "significant", "mde", "covariate_balance_p"}


def test_a_covariate_that_follows_the_arm_is_flagged():
    """An earlier log of the same experiment (its users in the same arms, the treatment already in their metric)."""
    metrics, covariates = cuped_case(seed=13)
    treated = covariates["user"].isin(metrics.loc[metrics["arm"] == "T1", "user"])
    covariates.loc[treated, "mean_time_per_session"] += 0.1
    document = ab.cuped_document(ab.covariate_moments(metrics, covariates, ("mean_time_per_session",)), covariate="x")
    assert not document["balanced"]
    assert document["effects"]["T1"]["mean_time_per_session"]["covariate_balance_p"] < 1e-6
