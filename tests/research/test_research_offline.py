"""Offline ranking metrics against values computed by hand, and the shuffled-list expectations against sampling."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from botify_lab.research import offline


def test_precision_reciprocal_rank_and_hit_rate_by_hand():
    ranking = [5, 3, 9, 1, 7]
    relevant = {9, 7, 42}
    assert offline.precision_at_k(ranking, relevant, 2) == 0.0
    assert offline.precision_at_k(ranking, relevant, 3) == pytest.approx(1 / 3)
    assert offline.precision_at_k(ranking, relevant, 10) == pytest.approx(2 / 10)  # short list still divides by k
    assert offline.reciprocal_rank(ranking, relevant) == pytest.approx(1 / 3)
    assert offline.reciprocal_rank(ranking, relevant, k=2) == 0.0
    assert offline.hit_rate_at_k(ranking, relevant, 2) == 0.0
    assert offline.hit_rate_at_k(ranking, relevant, 3) == 1.0


def test_ranking_metrics_average_over_users_with_relevant_tracks():
    rankings = {1: [10, 11, 12], 2: [12, 11, 10], 3: [10, 11, 12]}
    relevant = {1: {10}, 2: {10, 11}, 3: set(), 4: {99}}
    result = offline.ranking_metrics(rankings, relevant, k=2)
    # user 1: p@2 = 1/2, rr = 1; user 2: p@2 = 1/2, rr = 1/2; user 4 (no ranking): 0, 0; user 3 left out
    assert result["users"] == 3
    assert result["precision_at_2"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert result["mrr"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert result["hit_rate_at_2"] == pytest.approx(2 / 3)
    shared = offline.ranking_metrics([11, 10], {1: {10}, 2: {12}}, k=1)
    assert shared["precision_at_1"] == 0.0 and shared["mrr"] == pytest.approx(0.25)


@pytest.mark.parametrize("n,r", [(4, 1), (5, 2), (6, 3), (3, 3), (4, 0)])
def test_shuffled_expectations_equal_the_average_over_every_ordering(n, r):
    items = list(range(n))
    relevant = set(range(r))
    orderings = list(itertools.permutations(items))
    k = 2
    expected_precision = np.mean([offline.precision_at_k(order, relevant, k) for order in orderings])
    expected_rr = np.mean([offline.reciprocal_rank(order, relevant) for order in orderings])
    expected_hit = np.mean([offline.hit_rate_at_k(order, relevant, k) for order in orderings])
    assert offline.shuffled_precision_at_k(n, r, k) == pytest.approx(expected_precision)
    assert offline.shuffled_reciprocal_rank(n, r) == pytest.approx(expected_rr)
    assert offline.shuffled_hit_rate_at_k(n, r, k) == pytest.approx(expected_hit)


def test_shuffled_metrics_of_a_top_list_by_hand_and_by_seeded_sampling():
    top = list(range(10))
    relevant = {1: {0, 50}, 2: {60}, 3: {3, 4}}
    exact = offline.shuffled_metrics(top, relevant, k=2)
    # user 1: one relevant of 10 -> p@2 = 0.2/2... = 1/10; rr = H(10)/10; user 2: none; user 3: two of 10 -> 2/10
    harmonic = sum(1 / i for i in range(1, 11)) / 10
    rr_two = offline.shuffled_reciprocal_rank(10, 2)
    assert exact["precision_at_2"] == pytest.approx((0.1 + 0 + 0.2) / 3)
    assert exact["mrr"] == pytest.approx((harmonic + 0 + rr_two) / 3)
    sampled = offline.sampled_shuffled_metrics(top, relevant, k=2, draws=400, seed=3)
    assert sampled["precision_at_2"] == pytest.approx(exact["precision_at_2"], abs=0.02)
    assert sampled["mrr"] == pytest.approx(exact["mrr"], abs=0.03)
    assert offline.sampled_shuffled_metrics(top, relevant, k=2, draws=5, seed=3) == offline.sampled_shuffled_metrics(
        top, relevant, k=2, draws=5, seed=3
    )


def test_matrix_precision_excludes_minus_inf_and_breaks_ties_to_the_smaller_item():
    scores = np.array([[0.9, -np.inf, 0.5, 0.5, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    test_rows = [np.array([2]), np.array([0, 4]), np.array([], dtype=int)]
    # row 0: top 2 = {0, 2} (2 beats 3 on the tie) -> 1/2; row 1: all tied -> {0, 1} -> 1/2; row 2 has no test item
    assert offline.matrix_precision_at_k(scores, test_rows, k=2) == pytest.approx(0.5)
    assert offline.matrix_precision_at_k(scores, [np.array([3]), np.array([4]), np.array([0])], k=2) == 0.0
    mask = np.zeros(scores.shape, dtype=bool)
    mask[0, 2] = mask[1, 0] = mask[1, 4] = True
    assert offline.matrix_precision_at_k(scores, mask, k=2) == pytest.approx(0.5)


def test_matrix_precision_matches_a_stable_sort_on_random_tied_scores():
    rng = np.random.default_rng(0)
    for _ in range(100):
        scores = rng.integers(0, 4, (5, 12)).astype(float)
        scores[rng.random(scores.shape) < 0.2] = -np.inf
        mask = rng.random(scores.shape) < 0.3
        k = int(rng.integers(1, 6))
        rows = mask.any(axis=1)
        top = np.argsort(-scores[rows], axis=1, kind="stable")[:, :k]
        expected = np.mean(np.take_along_axis(mask[rows], top, axis=1).sum(axis=1) / k) if rows.any() else 0.0
        assert offline.matrix_precision_at_k(scores, mask, k) == pytest.approx(expected)
