"""Off-policy evaluation: what a target recommender would earn, estimated from a log that another policy served.

Every "next" line the service writes carries the probability with which its arm drew the recommendation
(`propensity`). A decision of the log is (context: the user and the track just heard; action: the recommendation;
reward: the listen time the user then gave it), and a target policy gives the probability it would have chosen that
action in that context. From these, three standard estimators of the target's expected reward per decision:

- IPS (inverse propensity scoring): the mean of w * r with w = target / logged probability. Unbiased when the
  logging policy could serve every action the target serves (support); its variance grows with the weights.
- SNIPS (self-normalised IPS): sum(w * r) / sum(w). Slightly biased, far less variable; bounded by the rewards.
- DR (doubly robust): a reward model's expected value under the target, corrected by w times the model's error on
  the logged action. Unbiased if either the propensities or the model are right.

Intervals are normal (central limit) 95% intervals; SNIPS's by the delta method. The Open Bandit Pipeline (`obp`)
has these estimators, but its releases since 0.5 need Python < 3.10 and 0.4 predates NumPy 2, so they are written
here, each tested against hand-computed cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from botify_lab.formats import uniform_over

CONFIDENCE = 0.95
DECISION_COLUMNS = ["order", "user", "track", "action", "propensity", "reward"]


class MissingPropensities(ValueError):
    """The log's "next" lines carry no propensity (a log written before the service logged them, or the course's)."""


def logged_decisions(
    events: pd.DataFrame, experiment: str | None = None, arms: Collection[str] | None = None
) -> pd.DataFrame:
    """One row per logged decision whose outcome the log holds: the user's next line (in log order) names the
    recommended track, and its listen time is the reward.

    A "next" line is followed by the user's next request, which reports the recommendation they heard; a decision
    without one (the log ended, or another session of the same user interleaved) is left out. Columns: order (of
    the decision's line), user, track (the context: what was just heard), action, propensity, reward, and with
    `experiment` the user's arm in it (`arm`), only those of `arms` when given (a recommender of one's own may log
    no propensity: its arm is left out, not the log).
    """
    following = events.groupby("user", sort=False).shift(-1)
    decided = (events["message"] == "next") & (following["track"] == events["recommendation"]).fillna(False)
    decisions = events.loc[decided, ["order", "user", "track", "recommendation", "propensity"]].rename(
        columns={"recommendation": "action"}
    )
    decisions["action"] = decisions["action"].astype(np.int64)
    decisions["reward"] = following.loc[decided, "time"].astype(np.float64)
    if experiment is not None:
        decisions["arm"] = events.loc[decided, "experiments"].map(lambda served: served.get(experiment)).to_numpy()
        decisions = decisions[decisions["arm"].notna() & (decisions["arm"].isin(arms) if arms is not None else True)]
    if decisions["propensity"].isna().any():
        missing = int(decisions["propensity"].isna().sum())
        raise MissingPropensities(
            f"{missing} of {len(decisions)} decisions have no propensity: the log was written by a service that did "
            "not log them (the course's, or this one's before it did); off-policy estimates need them"
        )
    return decisions[DECISION_COLUMNS + (["arm"] if experiment is not None else [])].reset_index(drop=True)


@dataclass(frozen=True)
class Estimate:
    """An estimator's value of the target's expected reward per decision, with its 95% interval."""

    estimator: str
    value: float
    standard_error: float
    decisions: int
    effective_decisions: float  # (sum w)^2 / sum w^2: how many decisions the weights are worth
    matched_share: float  # decisions whose logged action the target could have chosen (w > 0)

    @property
    def interval(self) -> tuple[float, float]:
        half = stats.norm.ppf(0.5 + CONFIDENCE / 2) * self.standard_error
        return self.value - half, self.value + half

    def as_row(self) -> dict:
        low, high = self.interval
        return {
            "estimator": self.estimator,
            "value": self.value,
            "ci_low": low,
            "ci_high": high,
            "standard_error": self.standard_error,
            "decisions": self.decisions,
            "effective_decisions": self.effective_decisions,
            "matched_share": self.matched_share,
        }


def importance_weights(target_probability: np.ndarray, logged_propensity: np.ndarray) -> np.ndarray:
    """w = target / logged probability of each logged action."""
    logged = np.asarray(logged_propensity, dtype=np.float64)
    if not (logged > 0).all():
        raise ValueError("every logged propensity must be positive: the logging policy chose the action")
    return np.asarray(target_probability, dtype=np.float64) / logged


def _weight_summary(weights: np.ndarray) -> tuple[float, float]:
    total, squares = weights.sum(), (weights**2).sum()
    return (float(total**2 / squares) if squares > 0 else 0.0), float((weights > 0).mean())


def _mean_estimate(name: str, terms: np.ndarray, weights: np.ndarray) -> Estimate:
    n = len(terms)
    error = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Estimate(name, float(terms.mean()), error, n, *_weight_summary(weights))


def ips(rewards: np.ndarray, weights: np.ndarray) -> Estimate:
    rewards, weights = np.asarray(rewards, np.float64), np.asarray(weights, np.float64)
    return _mean_estimate("IPS", weights * rewards, weights)


def snips(rewards: np.ndarray, weights: np.ndarray) -> Estimate:
    rewards, weights = np.asarray(rewards, np.float64), np.asarray(weights, np.float64)
    total = weights.sum()
    if total <= 0:
        return Estimate("SNIPS", math.nan, math.nan, len(rewards), *_weight_summary(weights))
    value = float((weights * rewards).sum() / total)
    error = float(math.sqrt(((weights * (rewards - value)) ** 2).sum()) / total)
    return Estimate("SNIPS", value, error, len(rewards), *_weight_summary(weights))


def doubly_robust(
    rewards: np.ndarray, weights: np.ndarray, model_on_logged: np.ndarray, model_under_target: np.ndarray
) -> Estimate:
    """`model_on_logged`: the reward model's value of each logged action in its context; `model_under_target`: its
    expected value over the target's distribution in that context."""
    rewards, weights = np.asarray(rewards, np.float64), np.asarray(weights, np.float64)
    terms = np.asarray(model_under_target, np.float64) + weights * (rewards - np.asarray(model_on_logged, np.float64))
    return _mean_estimate("DR", terms, weights)


def track_mean_rewards(decisions: pd.DataFrame, n_tracks: int, prior_weight: float = 10.0) -> np.ndarray:
    """A simple reward model: each track's mean logged reward, shrunk toward the log's mean by `prior_weight`
    pseudo-decisions (a track never served gets the log's mean, with any prior, 0 included)."""
    overall = float(decisions["reward"].mean())
    sums = np.bincount(decisions["action"], weights=decisions["reward"], minlength=n_tracks)
    counts = np.bincount(decisions["action"], minlength=n_tracks)
    model = np.full(n_tracks, overall)
    seen = counts + prior_weight > 0
    model[seen] = (sums[seen] + prior_weight * overall) / (counts[seen] + prior_weight)
    return model


def estimates_table(estimates: list[Estimate]) -> pd.DataFrame:
    return pd.DataFrame([estimate.as_row() for estimate in estimates])


# A policy that draws uniformly from a list per context (user, track just heard): the list, or None (or an empty one)
# for a uniform draw from the whole catalog. The service's recommenders are all of this form.
Candidates = Callable[[int, int], Sequence[int] | None]


@dataclass(frozen=True)
class PolicyTerms:
    """What the estimators need of a target policy at each logged decision."""

    probability: np.ndarray  # the target's probability of the logged action
    model_expectation: np.ndarray  # the reward model's mean over the target's draw in that context
    support: np.ndarray  # the target's probability mass on actions the logging policy could have served there


def policy_terms(
    target: Candidates, logger: Candidates, decisions: pd.DataFrame, reward_model: np.ndarray
) -> PolicyTerms:
    """The target's terms at every decision. Each list's work is done once: a policy returns the same list object
    for every context that shares it (a track's neighbours, an artist's tracks, a user's list), and every decision's
    lists are held for the whole call, so the caches can key them by id. The logged action's probability is
    counted in its list (as the service's own propensity is); a list's whole distribution is built only where a
    support mass needs it, since most lists are seen at a decision or two."""
    n_tracks = len(reward_model)
    everything = range(n_tracks)  # the draw when a policy has no list: uniform over the catalog
    users, heard, actions = (decisions[name].to_numpy().tolist() for name in ("user", "track", "action"))
    target_lists = [tracks or everything for tracks in map(target, users, heard)]
    served_lists = [served or everything for served in map(logger, users, heard)]
    means: dict[int, float] = {}  # list id -> the reward model's mean over the list
    masses: dict[tuple[int, int], float] = {}  # (target list id, logger list id) -> the target's mass the logger serves

    def mean_over(tracks: Sequence[int]) -> float:
        mean = means.get(id(tracks))
        if mean is None:
            chosen = reward_model if tracks is everything else reward_model[list(tracks)]
            mean = means[id(tracks)] = float(chosen.mean())
        return mean

    def mass_served(tracks: Sequence[int], served: Sequence[int]) -> float:
        if served is everything:  # a logger drawing from the whole catalog supports every action
            return 1.0
        mass = masses.get((id(tracks), id(served)))
        if mass is None:
            allowed = set(served)
            if tracks is everything:
                mass = len(allowed) / n_tracks
            else:
                mass = sum(p for candidate, p in uniform_over(tracks).items() if candidate in allowed)
            masses[(id(tracks), id(served))] = mass
        return mass

    probability = np.array(
        [
            1.0 / n_tracks if tracks is everything else tracks.count(action) / len(tracks)
            for tracks, action in zip(target_lists, actions, strict=True)
        ],
        dtype=np.float64,
    )
    expectation = np.array(list(map(mean_over, target_lists)), dtype=np.float64)
    support = np.array(list(map(mass_served, target_lists, served_lists)), dtype=np.float64)
    return PolicyTerms(probability, expectation, support)


def estimate_all(decisions: pd.DataFrame, terms: PolicyTerms, reward_model: np.ndarray) -> list[Estimate]:
    """IPS, SNIPS and DR of one target on a set of decisions (rows of `terms` aligned with `decisions`)."""
    rewards = decisions["reward"].to_numpy(np.float64)
    weights = importance_weights(terms.probability, decisions["propensity"].to_numpy())
    on_logged = reward_model[decisions["action"].to_numpy()]
    return [
        ips(rewards, weights),
        snips(rewards, weights),
        doubly_robust(rewards, weights, on_logged, terms.model_expectation),
    ]
