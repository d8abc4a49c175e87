"""Stage `diverse_i2i`: the course's week-5 diverse item-to-item lists (notebooks/diverse_i2i.ipynb).

From the `indexed` stage's collaborative model (build/indexed/model.npz): for every track it knows, the
`diverse_i2i.k` nearest tracks by cosine of the item factors (biases left out) with at most
`diverse_i2i.per_artist` of one artist, written as a track-recommendations file for the service's Contextual
recommender (tracks the model never saw get an empty list: the service answers them at random). The same lists
without the artist cap (the model's plain item-to-item neighbours, the leaderboard's "collaborative model" arm) are
written beside them. Offline coverage metrics of both go to metrics/diverse_i2i.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import atomic_output_dir, write_metrics, write_plot
from botify_lab.pipeline.params import Params
from botify_lab.research.catalog import read_catalog
from botify_lab.research.collab import load_model
from botify_lab.research.i2i import distinct_artists, diverse_neighbours, list_metrics, write_track_lists

# Paths of this stage (candidates for layout.py).
METRICS_NAME = "diverse_i2i"
FIGURE_NAME = "diverse_i2i_artists"


@dataclass
class DiverseLists:
    catalog: pd.DataFrame
    lists: dict[int, list[int]]
    uncapped: dict[int, list[int]]
    metrics: dict


def build_lists(model_path: Path, catalog_path: Path, k: int, per_artist: int) -> DiverseLists:
    catalog = read_catalog(catalog_path)
    model = load_model(model_path)
    artists = catalog["artist"].to_numpy()
    lists = diverse_neighbours(model.item_embeddings, model.tracks, artists, k, per_artist)
    uncapped = diverse_neighbours(model.item_embeddings, model.tracks, artists, k, k)
    metrics = {
        "k": k,
        "per_artist": per_artist,
        **list_metrics(lists, artists, len(catalog), k),
        "uncapped": list_metrics(uncapped, artists, len(catalog), k),
    }
    return DiverseLists(catalog, lists, uncapped, metrics)


def run_diverse_i2i(params: Params) -> DiverseLists:
    """The stage: build/i2i/{diverse_i2i,i2i}.json, metrics/diverse_i2i.json, plots/diverse_i2i.csv."""
    settings = params.diverse_i2i
    result = build_lists(layout.INDEXED_MODEL, layout.CATALOG, int(settings.k), int(settings.per_artist))
    with atomic_output_dir(layout.I2I) as scratch:
        write_track_lists(result.catalog, result.lists, scratch / layout.I2I_RECS.name)
        write_track_lists(result.catalog, result.uncapped, scratch / layout.PLAIN_I2I_RECS.name)
    write_metrics(METRICS_NAME, result.metrics)
    write_plot(METRICS_NAME, artists_table(result))
    return result


def artists_table(result: DiverseLists) -> pd.DataFrame:
    """Lists per number of distinct artists, capped and uncapped."""
    artists = result.catalog["artist"].to_numpy()
    capped = distinct_artists(result.lists, artists).value_counts()
    uncapped = distinct_artists(result.uncapped, artists).value_counts()
    table = pd.DataFrame({"capped": capped, "uncapped": uncapped}).fillna(0).astype(int).sort_index()
    return table.rename_axis("distinct_artists").reset_index()


def artists_figure(result: DiverseLists):
    """The distribution of distinct artists per list, with and without the per-artist cap."""
    import matplotlib.pyplot as plt

    table = artists_table(result)
    figure, ax = plt.subplots(figsize=(7, 4))
    width = 0.4
    ax.bar(
        table["distinct_artists"] - width / 2,
        table["capped"],
        width,
        label=f"at most {result.metrics['per_artist']} per artist",
    )
    ax.bar(table["distinct_artists"] + width / 2, table["uncapped"], width, label="no cap")
    ax.set(
        title=f"distinct artists per list of {result.metrics['k']} ({result.metrics['tracks_with_list']:,} lists)",
        xlabel="distinct artists in the list",
        ylabel="tracks",
    )
    ax.legend()
    figure.tight_layout()
    return figure
