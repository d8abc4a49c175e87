"""Offline ranking metrics (the course's week 2 and 3): precision@k, reciprocal rank and hit rate of ranked lists
against each user's relevant tracks, and their exact expectations for a list the service serves shuffled.

Conventions (LightFM's, which the course used): precision@k divides the hits among the first k by k, whatever the
number of relevant tracks; the reciprocal rank is 1 / (position of the first relevant track), 0 when none is in the
list; users without any relevant track are left out of every mean (they can score nothing).

The service's TopPop(k) answers a uniformly random track among the k most popular, so its offline quality is that
of a random ordering of the top k: `shuffled_*` give the exact expectation over all orderings (no sampling, no seed),
and `sampled_shuffled_metrics` checks them by drawing orderings with a seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.special import gammaln


def _relevant_hits(ranking: Sequence[int], relevant: set[int]) -> np.ndarray:
    return np.fromiter((track in relevant for track in ranking), dtype=bool, count=len(ranking))


def precision_at_k(ranking: Sequence[int], relevant: Iterable[int], k: int = 10) -> float:
    """Share of the first k tracks of `ranking` that are relevant (a list shorter than k still divides by k)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return float(_relevant_hits(list(ranking)[:k], set(relevant)).sum() / k)


def reciprocal_rank(ranking: Sequence[int], relevant: Iterable[int], k: int | None = None) -> float:
    """1 / position of the first relevant track among the first k (all when k is None); 0 when there is none."""
    hits = _relevant_hits(list(ranking)[:k], set(relevant))
    positions = np.flatnonzero(hits)
    return float(1.0 / (positions[0] + 1)) if len(positions) else 0.0


def hit_rate_at_k(ranking: Sequence[int], relevant: Iterable[int], k: int = 10) -> float:
    """1 when any of the first k tracks is relevant, else 0."""
    return float(_relevant_hits(list(ranking)[:k], set(relevant)).any())


def _log_choose(n, r):
    return gammaln(np.asarray(n) + 1) - gammaln(np.asarray(r) + 1) - gammaln(np.asarray(n) - np.asarray(r) + 1)


def shuffled_precision_at_k(list_size: int, relevant_in_list: int, k: int = 10) -> float:
    """Expected precision@k when the first k tracks are a uniformly random ordering of a list of `list_size` tracks,
    `relevant_in_list` of them relevant: hits follow a hypergeometric law with mean k * r / n (k capped at n)."""
    n, r = int(list_size), int(relevant_in_list)
    if not 0 <= r <= n or n < 1:
        raise ValueError(f"need 0 <= relevant_in_list <= list_size, list_size >= 1; got {r}, {n}")
    return min(k, n) * r / n / k


def shuffled_reciprocal_rank(list_size: int, relevant_in_list: int) -> float:
    """Expected 1 / (position of the first relevant track) in a uniformly random ordering of the whole list.

    P(first relevant at position i) = C(n - i, r - 1) / C(n, r), for i = 1 .. n - r + 1.
    """
    n, r = int(list_size), int(relevant_in_list)
    if not 0 <= r <= n or n < 1:
        raise ValueError(f"need 0 <= relevant_in_list <= list_size, list_size >= 1; got {r}, {n}")
    if r == 0:
        return 0.0
    positions = np.arange(1, n - r + 2)
    log_p = _log_choose(n - positions, r - 1) - _log_choose(n, r)
    return float(np.sum(np.exp(log_p) / positions))


def shuffled_hit_rate_at_k(list_size: int, relevant_in_list: int, k: int = 10) -> float:
    """Probability that a uniformly random ordering puts a relevant track among its first k: 1 - C(n-r, k) / C(n, k)."""
    n, r = int(list_size), int(relevant_in_list)
    k = min(k, n)
    if r == 0:
        return 0.0
    if n - r < k:
        return 1.0
    return float(1.0 - np.exp(_log_choose(n - r, k) - _log_choose(n, k)))


def ranking_metrics(
    rankings: Mapping[int, Sequence[int]] | Sequence[int], relevant: Mapping[int, Iterable[int]], k: int = 10
) -> dict:
    """Mean precision@k, MRR (over the whole ranking) and hit rate@k over users with a relevant track.

    `rankings` maps user -> ranked tracks, or is one ranking shared by every user (TopPop).
    """
    shared = not isinstance(rankings, Mapping)
    precision, rr, hits, users = [], [], [], 0
    for user, tracks in relevant.items():
        tracks = set(tracks)
        if not tracks:
            continue
        ranking = rankings if shared else rankings.get(user, [])
        users += 1
        precision.append(precision_at_k(ranking, tracks, k))
        rr.append(reciprocal_rank(ranking, tracks))
        hits.append(hit_rate_at_k(ranking, tracks, k))
    return _means(users, precision, rr, hits, k)


def shuffled_metrics(top: Sequence[int], relevant: Mapping[int, Iterable[int]], k: int = 10) -> dict:
    """The exact expected precision@k, MRR and hit rate@k of a shuffled copy of `top` (TopPop(len(top)) as served)."""
    top = set(int(track) for track in top)
    n = len(top)
    precision, rr, hits, users = [], [], [], 0
    for tracks in relevant.values():
        tracks = set(tracks)
        if not tracks:
            continue
        users += 1
        r = len(tracks & top)
        precision.append(shuffled_precision_at_k(n, r, k))
        rr.append(shuffled_reciprocal_rank(n, r))
        hits.append(shuffled_hit_rate_at_k(n, r, k))
    return _means(users, precision, rr, hits, k)


def sampled_shuffled_metrics(
    top: Sequence[int], relevant: Mapping[int, Iterable[int]], k: int = 10, *, draws: int = 100, seed: int = 0
) -> dict:
    """The same means estimated by `draws` seeded random orderings of `top` per user (a check of the exact ones)."""
    rng = np.random.default_rng(seed)
    top = np.asarray(list(top))
    totals = None
    for _ in range(draws):
        ranking = {user: top[rng.permutation(len(top))].tolist() for user in relevant}
        result = ranking_metrics(ranking, relevant, k)
        keys = [key for key in result if key not in ("users", "k")]
        totals = {key: (totals or {}).get(key, 0.0) + result[key] / draws for key in keys}
    return {"users": result["users"], "k": k, **totals}


def _means(users: int, precision: list, rr: list, hits: list, k: int) -> dict:
    def mean(values: list) -> float:
        return float(np.mean(values)) if values else 0.0

    return {
        "users": users,
        "k": k,
        f"precision_at_{k}": mean(precision),
        "mrr": mean(rr),
        f"hit_rate_at_{k}": mean(hits),
    }


def matrix_precision_at_k(scores: np.ndarray, relevant, k: int = 10) -> float:
    """Mean precision@k over rows (users) with a relevant item, from a dense score matrix (users x items).

    `relevant` is a boolean matrix of the same shape, or one array of relevant item indices per row. Exclude
    training items beforehand by setting their scores to -inf. Ties go to the smaller item index.
    """
    scores = np.asarray(scores)
    if isinstance(relevant, np.ndarray) and relevant.shape == scores.shape:
        mask = relevant.astype(bool)
    else:
        mask = np.zeros(scores.shape, dtype=bool)
        for row, items in enumerate(relevant):
            mask[row, np.asarray(items, dtype=np.int64)] = True
    counted = mask.any(axis=1)
    if not counted.any():
        return 0.0
    scores, mask = scores[counted], mask[counted]
    k_eff = min(k, scores.shape[1])
    # the k-th best score per row; everything above it is in, ties at it are taken smallest index first
    threshold = -np.partition(-scores, k_eff - 1, axis=1)[:, k_eff - 1 : k_eff]
    above = scores > threshold
    tied = scores == threshold
    room = k_eff - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
    hits = (chosen & mask).sum(axis=1)
    return float(np.mean(hits / k))
