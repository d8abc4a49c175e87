"""Stage `train@<model>`: the course's week-4 contextual model fitted on the rounds' logs (notebooks/train.ipynb).

The model's section of `models:` (embedding_dim, similarity, loss, mlp settings) plus the shared `train:`
optimisation settings and the seed define the run; it reads only the pairs of the loop of days' event logs (every
round, or the last `collect.window` of them; the `pairs` stage reads them once for every model) and the public
catalog. The rounds' own models (`loop@roundN`) are fitted by the same `fit_on_pairs`, on the logs before them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import atomic_output_dir, show_progress, write_json, write_metrics, write_plot
from botify_lab.pipeline.params import ModelParams, Params, TrainParams
from botify_lab.research.catalog import read_catalog
from botify_lab.research.model import TrainingResult, TrainingSettings, predict, save_model, train_contextual
from botify_lab.stages.pairs import Pairs, read_pairs, read_round_pairs


@dataclass
class TrainedModel:
    name: str
    events: int
    catalog_size: int
    pairs: pd.DataFrame
    result: TrainingResult
    test_pairs: pd.DataFrame
    test_predictions: np.ndarray


def training_settings(name: str, params: Params) -> TrainingSettings:
    """How model `name` is fitted: each setting from its section of `models:`, else from `train:`, and the seed."""
    if name not in params.models:
        raise KeyError(f"no model {name!r} in params.yaml `models:` (have {sorted(params.models)})")
    model, train = params.models[name], params.train
    values = {}
    for setting in fields(TrainingSettings):
        if setting.name in ModelParams.model_fields:
            values[setting.name] = getattr(model, setting.name)
        elif setting.name in TrainParams.model_fields:
            values[setting.name] = getattr(train, setting.name)
    return TrainingSettings(**values, seed=params.seed)


@dataclass
class Fit:
    events: int
    pairs: pd.DataFrame
    result: TrainingResult


def fit_on_pairs(name: str, params: Params, found: Pairs, catalog_size: int) -> Fit:
    """Model `name` fitted on (first track, track, time) pairs."""
    result = train_contextual(found.pairs, catalog_size, training_settings(name, params), progress=show_progress())
    return Fit(found.events, found.pairs, result)


def fit_on_rounds(name: str, params: Params, rounds: list[str], catalog_size: int) -> Fit:
    """Model `name` fitted on the pairs of the rounds' logs (a round of the loop reads the rounds before it)."""
    return fit_on_pairs(name, params, read_round_pairs(rounds), catalog_size)


def training_record(name: str, rounds: list[str], fit: Fit) -> dict:
    """What build/models/<name>/training.json keeps: the rounds read, the settings and every epoch."""
    return {"model": name, "rounds": rounds, **fit.result.metrics()}


def train_model(name: str, params: Params) -> TrainedModel:
    """Train model `name` on the rounds' pairs (build/pairs, the `pairs` stage's).

    Writes the weights and the full training record (rounds, settings, every epoch) to build/models/<name>, the
    headline numbers to metrics/train_<name>.json and the loss curves to plots/train_<name>.csv.
    """
    catalog = read_catalog(layout.CATALOG)
    found = read_pairs()
    fit = fit_on_pairs(name, params, found, len(catalog))
    pairs, result = fit.pairs, fit.result
    with atomic_output_dir(layout.model_dir(name)) as scratch:
        save_model(result.model, scratch)
        write_json(scratch / "training.json", training_record(name, found.rounds, fit), sort_keys=True)
    write_metrics(f"train_{name}", {"model": name, **result.headline()}, sort_keys=True)
    write_plot(f"train_{name}", pd.DataFrame(result.metrics()["history"]))
    test_pairs = pairs.iloc[result.test_index]
    predictions = predict(result.model, test_pairs["context"].to_numpy(), test_pairs["track"].to_numpy())
    return TrainedModel(name, fit.events, len(catalog), pairs, result, test_pairs, predictions)
