"""Off-policy estimators against hand-computed cases, and unbiased on a bandit whose truth is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from botify_lab.research import ope
from botify_lab.research.logs import read_log

from .research_helpers import event, write_log


def with_propensity(row: dict, propensity: float) -> dict:
    return {**row, "propensity": propensity}


def test_a_decision_is_a_next_line_whose_recommendation_the_users_next_line_reports(tmp_path):
    rows = [
        with_propensity(event("next", 1, 1, 0, 1.0, recommendation=5, experiments={"E": "C"}), 0.5),
        with_propensity(event("next", 2, 2, 1, 1.0, recommendation=7, experiments={"E": "T1"}), 1.0),
        with_propensity(event("next", 3, 1, 5, 0.8, recommendation=6, experiments={"E": "C"}), 0.25),
        # user 2's next line reports another track (an interleaved session): its decision has no outcome
        with_propensity(event("next", 4, 2, 9, 1.0, recommendation=3, experiments={"E": "T1"}), 1.0),
        event("last", 5, 1, 6, 0.3, experiments={"E": "C"}),
        # user 3's decision: the log ends before its outcome
        with_propensity(event("next", 6, 3, 2, 1.0, recommendation=4, experiments={"E": "C"}), 0.5),
    ]
    events = read_log(write_log(tmp_path / "log" / "data.json", rows))
    decisions = ope.logged_decisions(events, "E")
    assert decisions[["user", "track", "action", "propensity", "reward", "arm"]].values.tolist() == [
        [1, 0, 5, 0.5, 0.8, "C"],
        [1, 5, 6, 0.25, 0.3, "C"],
    ]
    assert decisions["order"].tolist() == [0, 2]


def test_a_log_without_propensities_is_refused_with_the_reason(tmp_path):
    rows = [event("next", 1, 1, 0, 1.0, recommendation=5), event("last", 2, 1, 5, 0.5)]
    events = read_log(write_log(tmp_path / "log" / "data.json", rows))
    with pytest.raises(ope.MissingPropensities, match="1 of 1 decisions have no propensity"):
        ope.logged_decisions(events)


def test_an_arm_without_propensities_can_be_left_out_of_an_experiment_s_decisions(tmp_path):
    """A recommender of one's own logs no propensity: its arm is left out, the others' decisions stay."""
    with_propensity = {**event("next", 1, 1, 0, 1.0, recommendation=5, experiments={"LB": "C"}), "propensity": 0.5}
    rows = [
        with_propensity,
        event("last", 2, 1, 5, 0.5, experiments={"LB": "C"}),
        event("next", 3, 2, 0, 1.0, recommendation=7, experiments={"LB": "T1"}),
        event("last", 4, 2, 7, 0.25, experiments={"LB": "T1"}),
    ]
    events = read_log(write_log(tmp_path / "log" / "data.json", rows))
    with pytest.raises(ope.MissingPropensities, match="1 of 2 decisions have no propensity"):
        ope.logged_decisions(events, "LB")
    kept = ope.logged_decisions(events, "LB", arms={"C"})
    assert kept[["arm", "action", "propensity", "reward"]].to_dict("records") == [
        {"arm": "C", "action": 5, "propensity": 0.5, "reward": 0.5}
    ]


def test_the_estimators_on_a_hand_computed_case():
    rewards, weights = np.array([1.0, 0.0, 0.5]), np.array([2.0, 0.0, 2.0])
    estimate = ope.ips(rewards, weights)
    assert estimate.value == pytest.approx(1.0)  # mean of 2, 0, 1
    assert estimate.standard_error == pytest.approx(1.0 / math.sqrt(3))  # sd of 2, 0, 1 is 1
    assert estimate.effective_decisions == pytest.approx(16 / 8) and estimate.matched_share == pytest.approx(2 / 3)
    low, high = estimate.interval
    assert (high - low) / 2 == pytest.approx(1.959964 / math.sqrt(3), rel=1e-5)
    estimate = ope.snips(rewards, weights)
    assert estimate.value == pytest.approx(3 / 4)
    assert estimate.standard_error == pytest.approx(math.sqrt(4 * 0.25**2 + 4 * 0.25**2) / 4)
    # DR: 0.6 + w * (r - 0.5) = 1.6, 0.6, 0.6
    estimate = ope.doubly_robust(rewards, weights, np.full(3, 0.5), np.full(3, 0.6))
    assert estimate.value == pytest.approx(2.8 / 3)
    with pytest.raises(ValueError, match="must be positive"):
        ope.importance_weights(np.ones(2), np.array([0.5, 0.0]))


def test_the_track_mean_reward_model_shrinks_toward_the_logs_mean():
    decisions = pd.DataFrame({"action": [0, 0, 2], "reward": [1.0, 0.5, 0.0]})
    model = ope.track_mean_rewards(decisions, n_tracks=4, prior_weight=1.0)
    overall = 0.5
    assert model.tolist() == pytest.approx([(1.5 + overall) / 3, overall, (0.0 + overall) / 2, overall])


def test_without_a_prior_a_track_never_served_still_gets_the_logs_mean():
    decisions = pd.DataFrame({"action": [0, 0, 2], "reward": [1.0, 0.5, 0.0]})
    model = ope.track_mean_rewards(decisions, n_tracks=4, prior_weight=0.0)
    assert model.tolist() == pytest.approx([0.75, 0.5, 0.0, 0.5])


def test_the_estimates_cover_the_truth_of_a_known_bandit():
    """Uniform logging over 5 actions, a target that prefers the best: each estimate's interval holds the target's
    true value, and DR with the true reward means is the tightest."""
    rng = np.random.default_rng(3)
    means = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    target = np.array([0.05, 0.05, 0.1, 0.2, 0.6])
    truth = float(target @ means)
    actions = rng.integers(0, 5, size=20_000)
    rewards = (rng.random(len(actions)) < means[actions]).astype(np.float64)
    weights = ope.importance_weights(target[actions], np.full(len(actions), 0.2))
    estimates = [
        ope.ips(rewards, weights),
        ope.snips(rewards, weights),
        ope.doubly_robust(rewards, weights, means[actions], np.full(len(actions), truth)),
    ]
    for estimate in estimates:
        low, high = estimate.interval
        assert low < truth < high, estimate
    assert estimates[2].standard_error < estimates[1].standard_error < estimates[0].standard_error
    table = ope.estimates_table(estimates)
    assert table["estimator"].tolist() == ["IPS", "SNIPS", "DR"]


def test_a_list_policys_terms_at_each_decision_are_hand_computed():
    """A target that draws from a track's list (one list holds a track twice), else from the whole catalog, against
    a logger that draws by artist (tracks 0-1 and 2-5) or, for user 9, from the whole catalog."""
    reward_model = np.array([0.0, 1.0, 0.5, 0.5, 0.2, 0.8])
    lists = {0: (1, 1, 2), 2: (3, 4)}
    artist_tracks = {0: (0, 1), 1: (0, 1), 2: (2, 3, 4, 5), 3: (2, 3, 4, 5), 4: (2, 3, 4, 5), 5: (2, 3, 4, 5)}
    decisions = pd.DataFrame(
        {"user": [1, 1, 2, 9, 1], "track": [0, 2, 5, 0, 0], "action": [1, 4, 3, 2, 0], "reward": [1, 0, 1, 1, 0.0]}
    )
    terms = ope.policy_terms(
        lambda user, track: lists.get(track),
        lambda user, track: None if user == 9 else artist_tracks[track],
        decisions,
        reward_model,
    )
    assert terms.probability.tolist() == pytest.approx([2 / 3, 1 / 2, 1 / 6, 1 / 3, 0.0])
    assert terms.model_expectation.tolist() == pytest.approx([2.5 / 3, 0.35, 0.5, 2.5 / 3, 2.5 / 3])
    # support: the target's mass on the logger's tracks: (1, 1) of (1, 1, 2) from track 0; all of (3, 4) from track
    # 2; 4 of 6 catalog tracks from track 5; everything for the uniform logger
    assert terms.support.tolist() == pytest.approx([2 / 3, 1.0, 4 / 6, 1.0, 2 / 3])


def test_a_target_equal_to_the_logger_is_estimated_by_the_logs_own_mean():
    """Weights are all 1 when the target is the logging policy: IPS and SNIPS give the logged rewards' mean."""
    rng = np.random.default_rng(5)
    size, n_tracks = 500, 40
    tracks = rng.integers(0, n_tracks, size)
    decisions = pd.DataFrame(
        {
            "user": rng.integers(0, 50, size),
            "track": tracks,
            "action": (tracks // 4) * 4 + rng.integers(0, 4, size),  # a draw from the track's group of 4
            "propensity": np.full(size, 0.25),
            "reward": rng.random(size),
        }
    )
    groups = {group: tuple(range(group * 4, group * 4 + 4)) for group in range(n_tracks // 4)}
    by_group = lambda user, track: groups[track // 4]  # noqa: E731
    reward_model = ope.track_mean_rewards(decisions, n_tracks)
    terms = ope.policy_terms(by_group, by_group, decisions, reward_model)
    assert terms.support.tolist() == [1.0] * size
    estimates = ope.estimate_all(decisions, terms, reward_model)
    for estimate in estimates[:2]:
        assert estimate.value == pytest.approx(decisions["reward"].mean())
        assert estimate.effective_decisions == pytest.approx(size)
    # DR: the logged mean plus the model's mean under the target minus its mean on the logged actions (near 0)
    correction = (terms.model_expectation - reward_model[decisions["action"]]).mean()
    assert estimates[2].value == pytest.approx(decisions["reward"].mean() + correction)
    assert abs(correction) < 0.01
