"""The course's week-3 collaborative model: positive interactions of the log, a tuned matrix factorisation, and the
per-user lists the service's Indexed recommender serves.

The course trained LightFM with the WARP loss: `lightfm` here, from `lightfm-next` (a maintained fork that builds on
Python 3.11; LightFM 1.17's own source archive fails under PEP 517 builds, lyst/lightfm#687). `make venv` builds it
without native CPU flags, and it fits on one thread, so its factors are the same bytes on any x86-64 machine. The
`implicit` library's models stay available: `als` (alternating least squares on implicit feedback, Hu, Koren and
Volinsky 2008) and `bpr` (Bayesian personalised ranking, a pairwise ranking loss like WARP). LightFM's item biases
enter the exported factors as one more column, so `user_factors @ item_factors.T` ranks as its `predict` does.

The course's recipe, kept: positives are listens longer than `threshold` (0.8); only users and tracks with at least
`min_user_positives` / `min_track_positives` distinct positive tracks / users are kept (one pass over the counts of
the full positive table, as a pandas notebook filters: after it some users or tracks may hold fewer); the remaining
pairs are split 70/30 at random with the seed; optuna searches the hyperparameters on precision@10 of the 30% (train
tracks excluded from the ranking); the best setting's precision@10 per epoch is recorded; each user's top tracks are
exported. Every random choice (split, optuna's sampler, the model's initial factors) flows from the seed, and the
library runs on one thread, so the same params give the same files.

Nothing is excluded from a user's exported list, seen tracks included: the simulator zeroes only repeats inside one
session, so a track a user loved in an earlier session is still a good pick in the next one (the course's LightFM
lists did not filter them either).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import scipy.sparse as sp

from botify_lab.formats import atomic_write_bytes
from botify_lab.research.choices import ALGORITHMS
from botify_lab.research.offline import matrix_precision_at_k

POSITIVE_TIME = 0.8
MIN_POSITIVES = 5
USER_BLOCK = 1024
# Trailing item-factor columns that hold biases rather than taste: LightFM's [item bias, 1] (folded in here) and
# implicit BPR's item bias (its user factors end with a constant 1).
BIAS_COLUMNS = {"lightfm": 2, "bpr": 1}

# optuna's search space per algorithm: name -> (kind, low, high); ints and log-uniform floats.
SEARCH_SPACE = {
    "lightfm": {
        "factors": ("int_log", 8, 128),
        "learning_rate": ("float_log", 5e-3, 0.2),
        "item_alpha": ("float_log", 1e-8, 1e-3),
        "user_alpha": ("float_log", 1e-8, 1e-3),
        "iterations": ("int", 5, 40),
    },
    "als": {
        "factors": ("int_log", 8, 128),
        "regularization": ("float_log", 1e-2, 100.0),
        "iterations": ("int", 3, 30),
        "alpha": ("float_log", 0.5, 50.0),
    },
    "bpr": {
        "factors": ("int_log", 8, 128),
        "learning_rate": ("float_log", 1e-3, 0.2),
        "regularization": ("float_log", 1e-4, 0.1),
        "iterations": ("int", 20, 300),
    },
}


def positive_interactions(events: pd.DataFrame, threshold: float = POSITIVE_TIME) -> pd.DataFrame:
    """Distinct (user, track) pairs listened to longer than `threshold`, with how often (columns user, track, count).

    Every logged row counts, including a session's first track (time 1.0): the user's own pick from their
    interests is the clearest positive there is.
    """
    positive = events.loc[events["time"] > threshold, ["user", "track"]]
    counts = positive.groupby(["user", "track"], sort=True).size().rename("count").reset_index()
    return counts


def filter_min_positives(
    interactions: pd.DataFrame, min_user: int = MIN_POSITIVES, min_track: int = MIN_POSITIVES
) -> pd.DataFrame:
    """The pairs whose user has at least `min_user` positive tracks and whose track at least `min_track` positive
    users, both counted once on the unfiltered table (the course's filter; see the module note)."""
    per_user = interactions.groupby("user")["track"].transform("size")
    per_track = interactions.groupby("track")["user"].transform("size")
    kept = interactions[(per_user >= min_user) & (per_track >= min_track)]
    return kept.sort_values(["user", "track"]).reset_index(drop=True)


def split_interactions(
    interactions: pd.DataFrame, test_share: float = 0.3, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded random split of the pairs: about `test_share` of them to the test part."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must lie in (0, 1), got {test_share}")
    ordered = interactions.sort_values(["user", "track"]).reset_index(drop=True)
    test = np.random.default_rng(seed).random(len(ordered)) < test_share
    return ordered[~test].reset_index(drop=True), ordered[test].reset_index(drop=True)


@dataclass
class Interactions:
    """Train and test pairs as users x items matrices; row i is user `users[i]`, column j is track `tracks[j]`.

    Items are the tracks of the filtered pairs only: a track the model never saw has no factors.
    """

    users: np.ndarray
    tracks: np.ndarray
    train: sp.csr_matrix
    test: sp.csr_matrix

    @classmethod
    def from_pairs(cls, train: pd.DataFrame, test: pd.DataFrame | None = None) -> Interactions:
        test = train.iloc[:0] if test is None else test
        both = pd.concat([train, test])
        users = np.unique(both["user"].to_numpy(dtype=np.int64))
        tracks = np.unique(both["track"].to_numpy(dtype=np.int64))

        def matrix(pairs: pd.DataFrame) -> sp.csr_matrix:
            rows = np.searchsorted(users, pairs["user"].to_numpy(dtype=np.int64))
            columns = np.searchsorted(tracks, pairs["track"].to_numpy(dtype=np.int64))
            values = np.ones(len(pairs), dtype=np.float32)
            return sp.csr_matrix((values, (rows, columns)), shape=(len(users), len(tracks)))

        return cls(users, tracks, matrix(train), matrix(test))


@dataclass
class CollaborativeModel:
    """Trained factors: score(user row i, item column j) = user_factors[i] @ item_factors[j]."""

    algorithm: str
    users: np.ndarray
    tracks: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    settings: dict
    history: list[dict] = field(default_factory=list)

    def scores(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        return self.user_factors[rows] @ self.item_factors.T

    @property
    def item_embeddings(self) -> np.ndarray:
        """The item factors without the bias columns (what item-to-item similarity compares): LightFM's folded item
        bias and constant, implicit BPR's item bias."""
        extra = BIAS_COLUMNS.get(self.algorithm, 0)
        return self.item_factors[:, : self.item_factors.shape[1] - extra]


@contextlib.contextmanager
def _one_thread():
    """BLAS on one thread (implicit warns otherwise, and a fixed thread count keeps float sums identical)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _library_model(algorithm: str, settings: Mapping, seed: int):
    if algorithm == "lightfm":
        return _LightFMWarp(settings, seed)
    if algorithm == "als":
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=int(settings["factors"]),
            regularization=float(settings["regularization"]),
            iterations=int(settings["iterations"]),
            random_state=seed,
            num_threads=1,
            calculate_training_loss=False,
        )
    if algorithm == "bpr":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=int(settings["factors"]),
            learning_rate=float(settings["learning_rate"]),
            regularization=float(settings["regularization"]),
            iterations=int(settings["iterations"]),
            random_state=seed,
            num_threads=1,
        )
    raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


class _LightFMWarp:
    """LightFM's WARP model behind the interface `fit_model` drives (`fit` with a per-epoch callback, the factors),
    its biases folded into the factors: [user, 1, user bias] . [item, item bias, 1]."""

    def __init__(self, settings: Mapping, seed: int):
        from lightfm import LightFM

        self.iterations = int(settings["iterations"])
        self.model = LightFM(
            no_components=int(settings["factors"]),
            loss="warp",
            learning_rate=float(settings["learning_rate"]),
            item_alpha=float(settings["item_alpha"]),
            user_alpha=float(settings["user_alpha"]),
            random_state=np.random.RandomState(seed),
        )

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False, callback=None) -> None:
        for epoch in range(self.iterations):
            self.model.fit_partial(user_items, epochs=1, num_threads=1)
            if callback is not None:
                callback(epoch)

    @property
    def user_factors(self) -> np.ndarray:
        users = self.model.user_embeddings
        ones = np.ones((len(users), 1), dtype=users.dtype)
        return np.hstack([users, ones, self.model.user_biases[:, None]])

    @property
    def item_factors(self) -> np.ndarray:
        items = self.model.item_embeddings
        ones = np.ones((len(items), 1), dtype=items.dtype)
        return np.hstack([items, self.model.item_biases[:, None], ones])


def heldout_precision(user_factors: np.ndarray, item_factors: np.ndarray, data: Interactions, k: int = 10) -> float:
    """Mean precision@k on the test pairs, each user's train tracks excluded from their ranking (LightFM's
    `precision_at_k(model, test, train_interactions=train)`), over users with a test pair."""
    values, weights = [], []
    for start in range(0, len(data.users), USER_BLOCK):
        rows = slice(start, start + USER_BLOCK)
        scores = user_factors[rows] @ item_factors.T
        block = data.train[rows].tocoo()
        scores[block.row, block.col] = -np.inf
        relevant = data.test[rows].toarray() > 0
        counted = int(relevant.any(axis=1).sum())
        if counted:
            values.append(matrix_precision_at_k(scores, relevant, k))
            weights.append(counted)
    return float(np.average(values, weights=weights)) if values else 0.0


def fit_model(
    data: Interactions, algorithm: str, settings: Mapping, *, seed: int = 0, k: int = 10, track_history: bool = False
) -> CollaborativeModel:
    """Fit `algorithm` with `settings` on the train matrix; with `track_history`, precision@k on the test matrix
    after every epoch (history rows: epoch, precision_at_<k>)."""
    if data.train.nnz == 0:
        raise ValueError("no positive interactions to learn from")
    user_items = data.train * float(settings.get("alpha", 1.0)) if algorithm == "als" else data.train
    history: list[dict] = []

    def record(epoch, *_):
        history.append(
            {
                "epoch": int(epoch) + 1,
                f"precision_at_{k}": round(
                    heldout_precision(library_model.user_factors, library_model.item_factors, data, k), 6
                ),
            }
        )

    with _one_thread():
        library_model = _library_model(algorithm, settings, seed)
        library_model.fit(user_items.tocsr(), show_progress=False, callback=record if track_history else None)
    return CollaborativeModel(
        algorithm,
        data.users,
        data.tracks,
        np.asarray(library_model.user_factors).copy(),
        np.asarray(library_model.item_factors).copy(),
        dict(settings),
        history,
    )


def suggest(trial, algorithm: str) -> dict:
    """One point of the algorithm's search space (see SEARCH_SPACE)."""
    settings = {}
    for name, (kind, low, high) in SEARCH_SPACE[algorithm].items():
        if kind == "int":
            settings[name] = trial.suggest_int(name, low, high)
        elif kind == "int_log":
            settings[name] = trial.suggest_int(name, low, high, log=True)
        else:
            settings[name] = trial.suggest_float(name, low, high, log=True)
    return settings


def tune(
    data: Interactions, algorithm: str, trials: int, *, seed: int = 0, k: int = 10, baseline: Mapping | None = None
) -> tuple[dict, pd.DataFrame]:
    """optuna's seeded TPE search of the algorithm's hyperparameters on held-out precision@k, `trials` fits in one
    process (sequential, so the same seed gives the same trials). `baseline`, when given, is tried first.

    Returns the best settings and one row per trial (number, the settings, precision).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    if baseline is not None:
        study.enqueue_trial(dict(baseline))

    def objective(trial) -> float:
        model = fit_model(data, algorithm, suggest(trial, algorithm), seed=seed, k=k)
        return heldout_precision(model.user_factors, model.item_factors, data, k)

    study.optimize(objective, n_trials=trials, n_jobs=1)
    table = pd.DataFrame(
        [{"trial": trial.number, **trial.params, f"precision_at_{k}": trial.value} for trial in study.trials]
    )
    return dict(study.best_trial.params), table


def recommend_users(model: CollaborativeModel, n: int = 100) -> dict[int, list[int]]:
    """Each trained user's n best tracks (track ids), best first, ties to the smaller track id; seen tracks stay."""
    n_items = len(model.tracks)
    if not 1 <= n:
        raise ValueError(f"n must be at least 1, got {n}")
    n = min(n, n_items)
    recommendations: dict[int, list[int]] = {}
    for start in range(0, len(model.users), USER_BLOCK):
        scores = model.scores(slice(start, start + USER_BLOCK))
        # lexsort by (-score, column): a stable, tie-deterministic ranking of every item per user
        columns = np.broadcast_to(np.arange(n_items), scores.shape)
        order = np.lexsort((columns, -scores), axis=1)[:, :n]
        for user, items in zip(model.users[start : start + len(scores)], order):
            recommendations[int(user)] = model.tracks[items].tolist()
    return recommendations


def user_based_recommendations(interactions: pd.DataFrame, n: int = 100, neighbours: int = 50) -> dict[int, list[int]]:
    """User-based collaborative filtering, the week-3 baseline before the matrix factorisation: users are compared by
    the cosine of their sets of positive tracks; a user's tracks are scored by the summed similarity of their
    `neighbours` most similar other users who liked them; the n best (score > 0) make the list, best first.

    Ties (equal similarity, equal score) go to the smaller user / track id. A user whose neighbours liked nothing
    gets no list (the service answers them at random).
    """
    if n < 1 or neighbours < 1:
        raise ValueError(f"n and neighbours must be at least 1, got {n}, {neighbours}")
    data = Interactions.from_pairs(interactions[["user", "track"]])
    matrix = data.train.astype(np.float64)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    unit = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix
    unit_t = unit.T.tocsr()
    n_users = len(data.users)
    width = min(neighbours, n_users - 1)
    recommendations: dict[int, list[int]] = {}
    if width < 1:
        return recommendations
    for start in range(0, n_users, USER_BLOCK):
        rows = np.arange(start, min(start + USER_BLOCK, n_users))
        similarity = np.asarray((unit[rows] @ unit_t).todense())
        similarity[np.arange(len(rows)), rows] = -np.inf
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :width]
        weights = np.take_along_axis(similarity, nearest, axis=1)
        weights[~np.isfinite(weights) | (weights < 0)] = 0.0
        kept = sp.csr_matrix(
            (weights.ravel(), (np.repeat(np.arange(len(rows)), width), nearest.ravel())), shape=(len(rows), n_users)
        )
        scores = np.asarray((kept @ matrix).todense())
        order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        for row, items in zip(rows, order):
            items = items[scores[row - start, items] > 0]
            if len(items):
                recommendations[int(data.users[row])] = data.tracks[items].tolist()
    return recommendations


def write_user_recommendations(recommendations: Mapping[int, Sequence[int]], out_path: Path | str) -> Path:
    """The service's user-recommendations file: JSONL `{"user": id, "tracks": [ids]}`, users ascending, atomic."""
    lines = [
        orjson.dumps({"user": int(user), "tracks": [int(track) for track in recommendations[user]]})
        for user in sorted(recommendations)
    ]
    return atomic_write_bytes(out_path, b"\n".join(lines) + b"\n" if lines else b"")


def save_model(model: CollaborativeModel, path: Path | str) -> Path:
    """The factors and their ids as one .npz (what the diverse item-to-item stage reads), atomically."""
    import io

    buffer = io.BytesIO()
    np.savez(
        buffer,
        users=model.users,
        tracks=model.tracks,
        user_factors=model.user_factors,
        item_factors=model.item_factors,
        algorithm=np.array(model.algorithm),
    )
    return atomic_write_bytes(path, buffer.getvalue())


def load_model(path: Path | str) -> CollaborativeModel:
    with np.load(path) as saved:
        return CollaborativeModel(
            str(saved["algorithm"]), saved["users"], saved["tracks"], saved["user_factors"], saved["item_factors"], {}
        )
