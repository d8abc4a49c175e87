"""Stage `export@<model>`: each track's `neighbours` best tracks under the model's own similarity (the track itself
included unless `exclude_self`), written as the track-recommendations file the service's Contextual recommender
reads (notebooks/export.ipynb)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import show_progress, write_metrics
from botify_lab.pipeline.params import Params
from botify_lab.research.catalog import read_catalog
from botify_lab.research.export import coverage, same_artist_share, top_k_neighbours, write_track_recommendations
from botify_lab.research.model import load_model


@dataclass
class ExportedModel:
    name: str
    catalog: pd.DataFrame
    neighbours: np.ndarray
    metrics: dict


def export_model(name: str, params: Params) -> ExportedModel:
    """Write build/recs/<name>.json and metrics/export_<name>.json (coverage and same-artist share)."""
    model = params.models[name]
    k, exclude_self = model.neighbours, model.exclude_self
    catalog = read_catalog(layout.CATALOG)
    neighbours = top_k_neighbours(
        load_model(layout.model_dir(name)), k, exclude_self=exclude_self, progress=show_progress()
    )
    write_track_recommendations(layout.CATALOG, neighbours, layout.recs_file(name))
    covered = coverage(neighbours)
    metrics = {
        "model": name,
        "k": k,
        "exclude_self": exclude_self,
        "tracks": len(catalog),
        "coverage": covered,
        "coverage_share": round(covered / len(catalog), 6),
        "same_artist_share": round(same_artist_share(neighbours, catalog["artist"].to_numpy()), 6),
    }
    write_metrics(f"export_{name}", metrics, sort_keys=True)
    return ExportedModel(name, catalog, neighbours, metrics)
