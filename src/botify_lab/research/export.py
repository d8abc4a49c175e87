"""Per-track neighbours under a trained model's own similarity, written for the service's Contextual recommender.

For a track t (as a session's first track, i.e. its context row), every catalog track is scored with the model's
similarity and the best k become t's recommendations. The scoring runs in blocks of contexts so a 50,000-track
catalog never needs the full 50,000 x 50,000 score matrix in memory.

Self rule: a track is never its own neighbour. The simulated user gives a track already played in the session a listen
time of 0, and the Contextual recommender is asked right after the user heard t, so recommending t itself is always a
wasted turn (the course's dot export did not exclude it, which only wasted some of its 10 slots).

Ties: equal scores rank the smaller track id first, so the output depends on the weights alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import torch
from torch.nn import functional as F

from botify_lab.formats import atomic_write_bytes
from botify_lab.research.catalog import read_catalog
from botify_lab.research.model import ContextualModel, torch_setup

SCORE_BLOCK_BYTES = 256 * 1024 * 1024


def _block_rows(n_tracks: int, width: int) -> int:
    """Contexts per block so one block of scores (n_tracks x width floats per context) stays near 256 MiB."""
    return max(1, SCORE_BLOCK_BYTES // (4 * n_tracks * width))


def top_k_columns(scores: torch.Tensor, k: int) -> np.ndarray:
    """The k best columns per row, best first, ties to the smaller column id (torch.topk leaves tie order open).

    Rows must hold at least k finite scores; set a score to -inf to exclude that column. One topk of k+1 per row
    settles almost every row; only rows whose k-th and (k+1)-th scores tie are re-ranked over all their columns.
    """
    width = min(k + 1, scores.shape[1])
    values, indices = torch.topk(scores, width, dim=1, sorted=True)
    if not torch.isfinite(values[:, :k]).all():
        raise ValueError("scores must be finite for at least k columns of every row (NaN weights?)")
    values, indices = values.numpy(), indices.numpy()
    best = np.empty((len(scores), k), dtype=np.int64)
    tied = values[:, k] == values[:, k - 1] if width > k else np.zeros(len(scores), dtype=bool)
    clear = np.flatnonzero(~tied)
    order = np.lexsort((indices[clear, :k], -values[clear, :k]))
    best[clear] = np.take_along_axis(indices[clear, :k], order, axis=1)
    for row in np.flatnonzero(tied):
        row_scores = scores[row].numpy()
        candidates = np.flatnonzero(row_scores >= values[row, k - 1])
        best[row] = candidates[np.lexsort((candidates, -row_scores[candidates]))][:k]
    return best


@torch.no_grad()
def _score_block(model: ContextualModel, context_ids: torch.Tensor, prepared: dict) -> torch.Tensor:
    """Scores of every catalog track (columns) for a block of context tracks (rows)."""
    similarity = model.config.similarity
    if similarity in ("dot", "cosine"):
        return prepared["context"][context_ids] @ prepared["track"].T
    # mlp: the first layer is linear in the concatenation, so it splits into a context part and a track part.
    first = prepared["context_hidden"][context_ids][:, None, :] + prepared["track_hidden"][None, :, :]
    return model.mlp[1:](first).squeeze(-1)


@torch.no_grad()
def _prepare(model: ContextualModel) -> dict:
    context = model.context.weight.detach()
    track = model.track.weight.detach()
    similarity = model.config.similarity
    if similarity == "dot":
        return {"context": context, "track": track}
    if similarity == "cosine":
        return {"context": F.normalize(context, dim=1, eps=1e-8), "track": F.normalize(track, dim=1, eps=1e-8)}
    first_layer = model.mlp[0]
    dim = model.config.embedding_dim
    return {
        "context_hidden": context @ first_layer.weight[:, :dim].T,
        "track_hidden": track @ first_layer.weight[:, dim:].T + first_layer.bias,
    }


@torch.no_grad()
def top_k_neighbours(
    model: ContextualModel,
    k: int = 10,
    *,
    exclude_self: bool = True,
    block_rows: int | None = None,
    num_threads: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """An (n_tracks, k) int64 array: row t lists t's k best tracks, best first, under the model's similarity.

    Large matrix products dominate here, so torch's own thread count is the default; the result does not
    depend on it, nor on `block_rows`.
    """
    from tqdm import tqdm

    n_tracks = model.config.n_tracks
    limit = n_tracks - 1 if exclude_self else n_tracks
    if not 1 <= k <= limit:
        raise ValueError(f"k must lie in [1, {limit}] for a catalog of {n_tracks} tracks, got {k}")
    model.eval()
    prepared = _prepare(model)
    width = model.config.mlp_hidden if model.config.similarity == "mlp" else 1
    rows = block_rows or _block_rows(n_tracks, width)
    neighbours = np.empty((n_tracks, k), dtype=np.int64)
    blocks = tqdm(range(0, n_tracks, rows), desc=f"neighbours ({model.config.similarity})", disable=not progress)
    with torch_setup(num_threads):
        for start in blocks:
            context_ids = torch.arange(start, min(start + rows, n_tracks))
            scores = _score_block(model, context_ids, prepared).float()
            if exclude_self:
                scores[torch.arange(len(context_ids)), context_ids] = -torch.inf
            neighbours[start : start + len(context_ids)] = top_k_columns(scores, k)
    return neighbours


def write_track_recommendations(catalog_path: Path | str, neighbours: np.ndarray, out_path: Path | str) -> Path:
    """Write the catalog's rows, in catalog order, each with `"recommendations": [ids]` (JSONL, atomic)."""
    catalog = read_catalog(catalog_path)
    neighbours = np.asarray(neighbours)
    if neighbours.ndim != 2 or len(neighbours) != len(catalog):
        raise ValueError(f"need one row of neighbours per catalog track ({len(catalog)}), got shape {neighbours.shape}")
    if neighbours.size and (neighbours.min() < 0 or neighbours.max() >= len(catalog)):
        raise ValueError("neighbour ids must be catalog track ids")
    lines = [
        orjson.dumps({"artist": artist, "title": title, "track": int(track), "recommendations": recommendations})
        for artist, title, track, recommendations in zip(
            catalog["artist"], catalog["title"], catalog["track"], neighbours.tolist()
        )
    ]
    return atomic_write_bytes(out_path, b"\n".join(lines) + b"\n")


def coverage(neighbours: np.ndarray) -> int:
    """How many distinct tracks appear in any recommendation list (the course's catalog-coverage view)."""
    return int(np.unique(np.asarray(neighbours)).size)


def same_artist_share(neighbours: np.ndarray, track_artists: np.ndarray) -> float:
    """Share of recommendation slots filled by a track of the same artist as the list's own track."""
    neighbours = np.asarray(neighbours)
    track_artists = np.asarray(track_artists)
    return float((track_artists[neighbours] == track_artists[:, None]).mean())


def neighbours_table(catalog, neighbours: np.ndarray, track: int):
    """One track's exported list as a table a reader can scan: rank, track, artist, title."""
    rows = catalog.loc[neighbours[track], ["track", "artist", "title"]]
    rows.insert(0, "rank", range(1, len(rows) + 1))
    return rows.set_index("rank")
