"""The sweep's pieces: its grid as DVC names it, a variant's settings, the offline ranking metrics, Holm across the
variants. The schema's checks are in test_params.py; the stages run in the tiny pipeline (test_repro.py)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

from botify_lab.pipeline.sweep import Variant, grid_variants
from botify_lab.stages.sweep import sweep_document, sweep_table
from botify_lab.stages.sweep_variant import ranking_metrics, variant_settings
from tests.conftest import REPO_ROOT, repo_params

PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_the_grid_is_dvcs_matrix_in_its_order():
    """The stage names DVC makes from the grid are the variants' names, in the order `grid_variants` gives them."""
    params = repo_params({"sweep": {"grid": {"embedding_dim": [8, 16], "similarity": ["mlp_sigmoid", "dot"]}}})
    variants = grid_variants(params)
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    names = [line.split("@", 1)[1] for line in listed.stdout.split() if line.startswith("sweep_variant@")]
    committed = grid_variants(repo_params())
    assert names == [f"{v.embedding_dim}-{v.similarity}-{v.loss}-{v.lr:g}" for v in committed]
    grid = PARAMS["sweep"]["grid"]
    assert len(variants) == 2 * 2 * len(grid["loss"]) * len(grid["lr"])
    assert variants[0] == Variant(8, "mlp_sigmoid", grid["loss"][0], grid["lr"][0])


def test_a_variant_is_the_base_model_with_the_grids_values():
    params = repo_params()
    settings = variant_settings(Variant(256, "mlp_sigmoid", "mae", 0.003), params)
    base = PARAMS["models"][PARAMS["sweep"]["base"]]
    assert (settings.embedding_dim, settings.similarity, settings.mlp_sigmoid) == (256, "mlp", True)
    assert (settings.loss, settings.lr) == ("mae", 0.003)
    assert (settings.mlp_hidden, settings.optimizer) == (base["mlp_hidden"], base["optimizer"])
    assert settings.batch_size == PARAMS["train"]["batch_size"] and settings.seed == PARAMS["seed"]
    assert not variant_settings(Variant(8, "dot", "mse", 0.001), params).mlp_sigmoid


def test_hit_rate_and_ndcg_count_only_well_listened_pairs_by_their_rank():
    neighbours = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    context = np.array([0, 0, 1, 2, 3])
    track = np.array([1, 3, 3, 1, 2])
    time = np.array([1.0, 0.9, 0.85, 0.2, 0.95])  # the fourth pair was skipped: not relevant
    found = ranking_metrics(neighbours, context, track, time, k=2, relevant_time=0.8)
    # Relevant pairs: rank 1 (hit), track 3 at rank 3 (beyond k=2), rank 3 again (miss), rank 3 for context 3 (miss).
    assert found == {"relevant_pairs": 4, "hit_rate": 0.25, "ndcg": 0.25}
    deeper = ranking_metrics(neighbours, context, track, time, k=3, relevant_time=0.8)
    assert deeper["hit_rate"] == 1.0
    assert deeper["ndcg"] == pytest.approx((1 + 3 / math.log2(4)) / 4, abs=1e-6)
    assert ranking_metrics(neighbours, context, track, time, k=3, relevant_time=1.01)["hit_rate"] is None


def record(name: str, effect: float, p_value: float, mse: float) -> dict:
    return {
        "variant": name,
        "label": name,
        "params": {"embedding_dim": 8, "similarity": "dot", "loss": "mse", "lr": 0.001},
        "offline": {
            "test": {"model_mse": mse, "train_mean_mse": 0.1, "random_mse": 0.26},
            "mse_vs_train_mean": mse / 0.1,
            "hit_rate": 0.1,
            "ndcg": 0.05,
            "coverage_share": 0.9,
            "same_artist_share": 0.01,
        },
        "online": {
            "mean_time_per_session": {
                "control_mean": 3.0,
                "treatment_mean": 3.0 * (1 + effect / 100),
                "effect": effect,
                "lower": effect - 2,
                "upper": effect + 2,
                "p_value": p_value,
            }
        },
    }


def test_holm_adjusts_the_variants_p_values_together():
    records = {
        name: record(name, effect, p, mse)
        for name, effect, p, mse in (("a", 5.0, 0.01, 0.08), ("b", -3.0, 0.04, 0.09), ("c", 1.0, 0.03, 0.085))
    }
    table = sweep_table(records, alpha=0.05).set_index("variant")
    assert table["p_holm"].to_dict() == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert table["significant_holm"].to_dict() == {"a": True, "b": False, "c": False}
    assert table.loc["b", "mse_vs_train_mean"] == pytest.approx(0.9)


def test_the_metrics_file_keeps_the_shared_control_once_and_refuses_tests_on_different_traffic():
    records = {name: record(name, effect, 0.01, 0.08) for name, effect in (("a", 5.0), ("b", -3.0), ("c", 1.0))}
    document = sweep_document(sweep_table(records, alpha=0.05), repo_params())
    assert document["control_mean"] == 3.0 and document["control"] == PARAMS["sweep"]["control"]
    assert set(document["variants"]) == {"a", "b", "c"}
    assert not {"label", "control_mean", "treatment_mean"} & set(document["variants"]["a"])
    assert document["rank_correlations"]["ndcg"]["spearman"] is None  # every variant has the same NDCG here
    records["b"]["online"]["mean_time_per_session"]["control_mean"] = 3.1
    with pytest.raises(ValueError, match="was not the same"):
        sweep_document(sweep_table(records, alpha=0.05), repo_params())
