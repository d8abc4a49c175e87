"""Stage `indexed`: the course's week-3 collaborative model and the Indexed recommender's per-user lists
(notebooks/indexed.ipynb).

From the collected log: positives (listen time above `indexed.positive_time`), users and tracks with enough of them,
a seeded train/test split, an optuna search (`indexed.trials` fits) of the model's hyperparameters (LightFM WARP as
the course ran it, or the `implicit` library's ALS or BPR: `indexed.algorithm`) on held-out precision@k, the best
setting refitted with precision@k recorded after every epoch, and each user's `indexed.top` best tracks written for
the service. The factors are kept (build/indexed/model.npz) for the diverse item-to-item stage. The week's baseline,
user-based collaborative filtering over every user's positives (`indexed.user_based_neighbours` nearest users), is
written beside it as a second user-recommendations file (build/indexed/user_based_recs.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import atomic_output_dir, write_json, write_metrics, write_plot
from botify_lab.pipeline.params import IndexedParams, Params
from botify_lab.research.collab import (
    CollaborativeModel,
    Interactions,
    filter_min_positives,
    fit_model,
    heldout_precision,
    positive_interactions,
    recommend_users,
    save_model,
    split_interactions,
    tune,
    user_based_recommendations,
    write_user_recommendations,
)
from botify_lab.research.logs import read_log

# Paths of this stage beside layout.USER_RECS (candidates for layout.py).
METRICS_NAME = "indexed"
FIGURE_NAME = "indexed_precision"


@dataclass
class IndexedResult:
    positives: pd.DataFrame
    kept: pd.DataFrame
    data: Interactions
    trials: pd.DataFrame
    model: CollaborativeModel
    metrics: dict


def toppop_precision(data: Interactions, k: int) -> float:
    """The same held-out precision@k for TopPop (train popularity, one ranking for all): the bar to clear."""
    popularity = np.asarray(data.train.sum(axis=0), dtype=np.float64).ravel()
    return heldout_precision(np.ones((len(data.users), 1)), popularity[:, None], data, k)


def train_indexed(log_dir: Path, out_dir: Path, settings: IndexedParams, seed: int) -> IndexedResult:
    """Tune, fit and export; writes user_recs.json, user_based_recs.json, model.npz and tuning.json into `out_dir`."""
    out_dir = Path(out_dir)
    k, algorithm = int(settings.k), settings.algorithm
    positives = positive_interactions(read_log(log_dir), float(settings.positive_time))
    kept = filter_min_positives(positives, int(settings.min_user_positives), int(settings.min_track_positives))
    if kept.empty:
        raise ValueError("no user and track has enough positives: lower indexed.min_*_positives or collect more")
    train, test = split_interactions(kept, float(settings.test_share), seed)
    data = Interactions.from_pairs(train, test)
    best, trials = tune(data, algorithm, int(settings.trials), seed=seed, k=k)
    model = fit_model(data, algorithm, best, seed=seed, k=k, track_history=True)
    recommendations = recommend_users(model, int(settings.top))
    write_user_recommendations(recommendations, out_dir / layout.USER_RECS.name)
    save_model(model, out_dir / layout.INDEXED_MODEL.name)
    user_based = user_based_recommendations(positives, int(settings.top), int(settings.user_based_neighbours))
    write_user_recommendations(user_based, out_dir / layout.USER_BASED_RECS.name)
    precision = heldout_precision(model.user_factors, model.item_factors, data, k)
    metrics = {
        "algorithm": algorithm,
        "positive_pairs": int(len(positives)),
        "positive_users": int(positives["user"].nunique()),
        "positive_tracks": int(positives["track"].nunique()),
        "kept_pairs": int(len(kept)),
        "users": int(len(data.users)),
        "tracks": int(len(data.tracks)),
        "train_pairs": int(data.train.nnz),
        "test_pairs": int(data.test.nnz),
        "trials": int(len(trials)),
        "best": {name: (round(value, 6) if isinstance(value, float) else value) for name, value in best.items()},
        f"precision_at_{k}": round(precision, 6),
        f"toppop_precision_at_{k}": round(toppop_precision(data, k), 6),
        "users_with_list": len(recommendations),
        "tracks_per_user": min(int(settings.top), len(data.tracks)),
        "user_based_users_with_list": len(user_based),
    }
    write_json(
        out_dir / layout.INDEXED_TUNING.name,
        {
            **metrics,
            "trial_table": [
                {key: (round(value, 6) if isinstance(value, float) else value) for key, value in row.items()}
                for row in trials.to_dict("records")
            ],
            "history": model.history,
        },
    )
    return IndexedResult(positives, kept, data, trials, model, metrics)


def run_indexed(params: Params) -> IndexedResult:
    """The stage: build/indexed, metrics/indexed.json and plots/indexed.csv (precision@k per epoch)."""
    with atomic_output_dir(layout.INDEXED) as scratch:
        result = train_indexed(layout.COLLECT_LOG, scratch, params.indexed, int(params.seed))
    write_metrics(METRICS_NAME, result.metrics)
    write_plot(METRICS_NAME, pd.DataFrame(result.model.history))
    return result


def precision_figure(result: IndexedResult):
    """Held-out precision@k after every epoch of the best setting, with TopPop's on the same split."""
    import matplotlib.pyplot as plt

    history = pd.DataFrame(result.model.history)
    column = next(name for name in history.columns if name.startswith("precision_at_"))
    figure, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        history["epoch"],
        history[column],
        marker="o",
        label=f"{result.metrics['algorithm']} (best of {result.metrics['trials']} trials)",
    )
    ax.axhline(result.metrics[f"toppop_{column}"], color="gray", linestyle="--", label="TopPop (train popularity)")
    ax.set(title=f"held-out {column.replace('_at_', '@')} per epoch", xlabel="epoch", ylabel=column)
    ax.legend()
    figure.tight_layout()
    return figure
