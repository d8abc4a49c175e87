"""The true-neighbour reference: what the world allows a contextual recommender, which no model could learn.

For every track, its nearest tracks under the simulator's hidden embeddings; served by the Contextual recommender
(a random one of them), it shows how far the learned models are from what the world rewards. It is computed from the
hidden world, so it is only ever served as a clearly labelled reference arm, never used to train or tune a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from botify_lab.formats import atomic_write_bytes
from botify_lab.pipeline import layout

# A reference no real recommender could be: a random one of the 10 nearest tracks under the hidden embeddings.
REFERENCE_LABEL = "Reference: true neighbours"


def true_neighbours(embeddings: np.ndarray, k: int = 10) -> np.ndarray:
    """Per track the k other tracks with the largest inner product under the hidden embeddings, best first."""
    from sim.world import nearest_by_inner_product

    table = nearest_by_inner_product(embeddings, np.arange(len(embeddings)), k + 1)
    own = table == np.arange(len(embeddings))[:, None]
    keep = np.where(own.any(axis=1)[:, None], ~own, np.arange(k + 1)[None, :] < k)
    return table[keep].reshape(len(embeddings), k)


def write_reference_recommendations(world_dir: Path, out_path: Path = layout.REFERENCE_RECS, k: int = 10) -> Path:
    """The true-neighbour reference as a track-recommendations file for the service's Contextual recommender.

    It is computed from the simulator's hidden world, so it may only ever be served as a clearly labelled reference
    arm (how far the world lets a contextual recommender go), never used to train or tune a model. The stage
    `reference` writes it once per world (a 50,000-track world's lists take seconds), for every stage serving it.
    """
    from sim.loader import load_world

    world = load_world(world_dir, verify=False)
    neighbours = true_neighbours(world.embeddings, k)
    lines = []
    with open(Path(world_dir) / "tracks.json", "rb") as handle:
        for line in handle:
            if line.strip():
                row = orjson.loads(line)
                row["recommendations"] = neighbours[row["track"]].tolist()
                lines.append(orjson.dumps(row))
    return atomic_write_bytes(out_path, b"\n".join(lines) + b"\n")
