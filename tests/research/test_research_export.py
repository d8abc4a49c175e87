"""Top-k neighbours under each similarity, on hand-made tables whose answer is known, and the written file."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import torch

from botify_lab.research import export
from botify_lab.research.model import ContextualModel, ModelConfig


def model_with_tables(context: list[list[float]], track: list[list[float]], similarity: str) -> ContextualModel:
    model = ContextualModel(ModelConfig(len(context), len(context[0]), similarity, mlp_hidden=4))
    with torch.no_grad():
        model.context.weight.copy_(torch.tensor(context))
        model.track.weight.copy_(torch.tensor(track))
    return model


# Track 3 is long and only roughly aligned with the positive contexts; tracks 0..2 are short and well aligned.
CONTEXT = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]
TRACK = [[0.5, 0.0], [0.0, 0.5], [0.3, 0.3], [4.0, 3.0], [-1.0, -1.0]]


def test_dot_ranks_by_inner_product_with_the_context_row():
    neighbours = export.top_k_neighbours(model_with_tables(CONTEXT, TRACK, "dot"), 2, progress=False)
    # context 0 = (1,0): dots 0.5, 0, 0.3, 4, -1 -> 3, then 0 (self) is excluded -> 2
    # context 2 = (1,1): dots 0.5, 0.5, 0.6 (self), 7, -2 -> 3, then the exact tie 0/1 goes to the smaller id
    # context 4 = (0,-1): dots 0, -0.5, -0.3, -3, 1 (self) -> 0, then 2
    assert neighbours.tolist() == [[3, 2], [3, 2], [3, 0], [4, 1], [0, 2]]


def test_cosine_prefers_direction_over_length():
    neighbours = export.top_k_neighbours(model_with_tables(CONTEXT, TRACK, "cosine"), 2, progress=False)
    # context 0 = (1,0): cosines 1, 0, .71, .8, -.71 -> 0 is self, so 3 then 2
    # context 1 = (0,1): cosines 0, 1 (self), .71, .6, -.71 -> the short aligned 2 beats the long 3
    # context 4 = (0,-1): cosines 0, -1, -.71, -.6, .71 (self) -> 0, then 3 (dot picked 2)
    assert neighbours.tolist() == [[3, 2], [2, 3], [3, 0], [4, 1], [0, 3]]


def test_self_is_excluded_by_default_and_allowed_on_request():
    model = model_with_tables(CONTEXT, TRACK, "cosine")
    assert all(track not in row for track, row in enumerate(export.top_k_neighbours(model, 4, progress=False)))
    with_self = export.top_k_neighbours(model, 1, exclude_self=False, progress=False)
    assert with_self[:, 0].tolist() == [0, 1, 2, 4, 4]


def test_equal_scores_rank_the_smaller_id_first():
    tied = model_with_tables([[1.0]] * 6, [[2.0], [1.0], [2.0], [1.0], [2.0], [2.0]], "dot")
    neighbours = export.top_k_neighbours(tied, 3, progress=False, block_rows=4)
    assert neighbours.tolist() == [[2, 4, 5], [0, 2, 4], [0, 4, 5], [0, 2, 4], [0, 2, 5], [0, 2, 4]]


def test_mlp_ranking_matches_the_network_scored_pair_by_pair():
    torch.manual_seed(3)
    model = ContextualModel(ModelConfig(40, 6, "mlp", mlp_hidden=5, mlp_sigmoid=True))
    with torch.no_grad():
        context_ids = torch.arange(40).repeat_interleave(40)
        track_ids = torch.arange(40).repeat(40)
        scores = model(context_ids, track_ids).reshape(40, 40)
    scores.fill_diagonal_(-torch.inf)
    expected = [sorted(range(40), key=lambda track: (-float(row[track]), track))[:5] for row in scores]
    neighbours = export.top_k_neighbours(model, 5, progress=False, block_rows=7)
    assert neighbours.tolist() == expected


@pytest.mark.parametrize("similarity", ["dot", "cosine", "mlp"])
def test_blocking_and_threads_do_not_change_the_answer(similarity):
    torch.manual_seed(0)
    model = ContextualModel(ModelConfig(101, 8, similarity, mlp_hidden=6))
    reference = export.top_k_neighbours(model, 10, progress=False)
    assert reference.shape == (101, 10) and reference.dtype == np.int64
    for block_rows, threads in ((1, 1), (13, 2), (500, 1)):
        again = export.top_k_neighbours(model, 10, block_rows=block_rows, num_threads=threads, progress=False)
        assert np.array_equal(reference, again)


def test_k_must_fit_the_catalog():
    model = model_with_tables(CONTEXT, TRACK, "dot")
    with pytest.raises(ValueError, match="k must lie"):
        export.top_k_neighbours(model, 5, progress=False)
    assert export.top_k_neighbours(model, 5, exclude_self=False, progress=False).shape == (5, 5)


def test_write_track_recommendations_adds_the_lists_to_catalog_rows(tmp_path, catalog_path):
    neighbours = np.array([[1, 2], [0, 2], [3, 4], [2, 5], [5, 0], [4, 1]])
    out = export.write_track_recommendations(catalog_path, neighbours, tmp_path / "out" / "recs.json")
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert rows[0] == {"artist": "artist 0", "title": "song 0", "track": 0, "recommendations": [1, 2]}
    assert [row["track"] for row in rows] == list(range(6))
    assert [row["recommendations"] for row in rows] == neighbours.tolist()
    assert sorted(path.name for path in out.parent.iterdir()) == ["recs.json"]  # no temporary file left


def test_write_track_recommendations_refuses_mismatched_input(tmp_path, catalog_path):
    with pytest.raises(ValueError, match="one row of neighbours per catalog track"):
        export.write_track_recommendations(catalog_path, np.zeros((5, 2), dtype=int), tmp_path / "recs.json")
    with pytest.raises(ValueError, match="catalog track ids"):
        export.write_track_recommendations(catalog_path, np.full((6, 2), 6), tmp_path / "recs.json")
    assert not (tmp_path / "recs.json").exists()


def test_catalog_ids_must_be_dense(tmp_path):
    from botify_lab.research.catalog import read_catalog

    path = tmp_path / "tracks.json"
    path.write_bytes(b'{"artist": "a", "title": "t", "track": 0}\n{"artist": "a", "title": "u", "track": 2}\n')
    with pytest.raises(ValueError, match="id 1 is missing"):
        read_catalog(path)
    path.write_bytes(b'{"artist": "a", "title": "t"}\n')
    with pytest.raises(ValueError, match="tracks.json:1"):
        read_catalog(path)


def test_coverage_counts_distinct_recommended_tracks():
    assert export.coverage(np.array([[1, 2], [2, 1], [1, 5]])) == 3


def test_top_k_columns_orders_inner_and_boundary_ties_by_id():
    scores = torch.tensor([[3.0, 5.0, 5.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0, 1.0], [0.0, -torch.inf, 2.0, 2.0, 1.0]])
    assert export.top_k_columns(scores.clone(), 2).tolist() == [[1, 2], [0, 1], [2, 3]]
    assert export.top_k_columns(scores.clone(), 3).tolist() == [[1, 2, 0], [0, 1, 2], [2, 3, 4]]
    assert export.top_k_columns(scores[:2].clone(), 5).tolist() == [[1, 2, 0, 3, 4], [0, 1, 2, 4, 3]]
    with pytest.raises(ValueError, match="finite"):
        export.top_k_columns(scores.clone(), 5)
    with pytest.raises(ValueError, match="finite"):
        export.top_k_columns(torch.tensor([[0.0, float("nan"), 1.0]]), 1)
