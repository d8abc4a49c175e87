"""What the sweep's stages share: a variant (one point of params.yaml `sweep.grid`), the grid in DVC's order, and
the record each variant's stage leaves for the `sweep` table."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from botify_lab.pipeline.params import Params

VARIANT_RECORD = "variant.json"  # in build/sweep/<variant>


@dataclass(frozen=True)
class Variant:
    """One point of the grid; `similarity` is the axis value (mlp_sigmoid: the mlp with its final sigmoid)."""

    embedding_dim: int
    similarity: str
    loss: str
    lr: float

    @property
    def model_similarity(self) -> str:
        return "mlp" if self.similarity == "mlp_sigmoid" else self.similarity

    @property
    def label(self) -> str:
        return f"{self.similarity}, d={self.embedding_dim}, {self.loss.upper()}, lr={self.lr:g}"


def rounded(value) -> float | None:
    """A float as the metrics files keep it (six decimals), None where the analysis could give no number."""
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def grid_variants(params: Params) -> list[Variant]:
    """The grid's variants in the order of DVC's matrix (embedding_dim, then similarity, loss, lr)."""
    grid = params.sweep.grid
    axes = (grid.embedding_dim, grid.similarity, grid.loss, grid.lr)
    return [Variant(int(dim), str(sim), str(loss), float(lr)) for dim, sim, loss, lr in itertools.product(*axes)]
