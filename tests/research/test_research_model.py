"""The contextual model: it learns, it is deterministic for a seed, and it survives a save/load round trip.

Both optimizers are covered: the course's dense Adam and the lazy one that updates only the rows a batch touches.
"""

from __future__ import annotations

import dataclasses
import json

import numba
import numpy as np
import orjson
import pandas as pd
import pytest
import torch
from torch import nn

from botify_lab.research import model as contextual
from botify_lab.research.lazy_adam import FADED_ROW_NORM, NEGLIGIBLE_WEIGHT, LazyAdam


def planted_pairs(repeats: int = 40, n_tracks: int = 8, seed: int = 0) -> pd.DataFrame:
    """16 distinct (context, track, time) facts repeated, so train, validation and test all hold them."""
    rng = np.random.default_rng(seed)
    contexts = rng.integers(n_tracks, size=16)
    tracks = rng.integers(n_tracks, size=16)
    times = np.round(rng.random(16), 2)
    facts = pd.DataFrame({"context": contexts, "track": tracks, "time": times}).drop_duplicates(["context", "track"])
    return pd.concat([facts] * repeats, ignore_index=True)


SEMINAR = contextual.TrainingSettings(
    embedding_dim=10,
    similarity="dot",
    loss="mse",
    mlp_hidden=64,
    mlp_sigmoid=False,
    optimizer="lazy_adam",
    init_std=0.1,
    lr=1e-3,
    weight_decay=1e-5,
    batch_size=2048,
    max_epochs=100,
    plateau_patience=3,
    early_stopping_patience=5,
    splits=(0.8, 0.1, 0.1),
    seed=0,
)


def fit(pairs, n_tracks, *, num_threads=1, kernel_threads=None, strict_determinism=False, progress=False, **changes):
    """`train_contextual` with the course seminar's settings, `changes` replacing some of them."""
    settings = dataclasses.replace(SEMINAR, **changes)
    return contextual.train_contextual(
        pairs,
        n_tracks,
        settings,
        num_threads=num_threads,
        kernel_threads=kernel_threads,
        strict_determinism=strict_determinism,
        progress=progress,
    )


FAST = dict(lr=0.05, batch_size=64, max_epochs=40, plateau_patience=3, early_stopping_patience=5, progress=False)


@pytest.mark.parametrize(
    ("similarity", "loss", "extra"),
    [
        ("dot", "mse", {}),
        ("cosine", "mse", {}),
        ("mlp", "mse", {"mlp_sigmoid": True}),
        ("mlp", "mae", {}),
        ("dot", "mae", {}),
    ],
)
def test_model_overfits_a_tiny_set(similarity, loss, extra):
    result = fit(planted_pairs(), 8, embedding_dim=8, similarity=similarity, loss=loss, seed=1, **FAST, **extra)
    test = result.test
    key = f"model_{loss}"
    assert test[key] < 0.2 * test[f"train_mean_{loss}"], test
    assert test["model_mse"] < test["random_mse"]
    assert result.history[0]["val_loss"] > result.history[result.best_epoch - 1]["val_loss"]
    count = len(planted_pairs())
    assert result.sizes == {
        "pairs": count,
        "train": round(0.8 * count),
        "validation": round(0.1 * count),
        "test": count - round(0.8 * count) - round(0.1 * count),
    }


def test_same_seed_gives_identical_weights_and_other_seeds_differ():
    pairs = planted_pairs()
    runs = [fit(pairs, 8, embedding_dim=4, similarity="mlp", seed=seed, **FAST) for seed in (3, 3, 4)]
    first, again, other = ([tensor.numpy() for tensor in run.model.state_dict().values()] for run in runs)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert runs[0].history == runs[1].history and runs[0].test == runs[1].test
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("optimizer", contextual.OPTIMIZERS)
def test_weights_do_not_depend_on_thread_count_or_strict_mode(optimizer):
    pairs = planted_pairs()
    settings = dict(embedding_dim=6, similarity="cosine", seed=5, optimizer=optimizer, **{**FAST, "max_epochs": 4})
    reference = fit(pairs, 8, num_threads=1, **settings).model.state_dict()
    for options in ({"num_threads": 2}, {"num_threads": 1, "strict_determinism": True}):
        state = fit(pairs, 8, **options, **settings).model.state_dict()
        assert all(torch.equal(reference[name], state[name]) for name in reference)
    assert not torch.are_deterministic_algorithms_enabled()


def test_plateau_lowers_the_rate_and_early_stopping_keeps_the_best_epoch():
    rng = np.random.default_rng(2)
    noise = pd.DataFrame(
        {"context": rng.integers(50, size=400), "track": rng.integers(50, size=400), "time": rng.random(400)}
    )
    result = fit(
        noise,
        50,
        embedding_dim=16,
        seed=0,
        lr=0.05,
        batch_size=32,
        max_epochs=60,
        plateau_patience=1,
        early_stopping_patience=4,
        progress=False,
    )
    losses = [row["val_loss"] for row in result.history]
    assert len(result.history) == result.best_epoch + 4 < 60
    assert result.best_epoch == int(np.argmin(losses)) + 1
    assert min(row["lr"] for row in result.history) < 0.05
    rates = [row["lr"] for row in result.history]
    assert rates == sorted(rates, reverse=True)
    # The kept weights are the best epoch's: their validation loss is the minimum of the history.
    generator = torch.Generator().manual_seed(0)
    _, validation, _ = contextual.split_indices(400, (0.8, 0.1, 0.1), generator)
    rows = noise.iloc[validation.numpy()]
    predictions = contextual.predict(result.model, rows["context"].to_numpy(), rows["track"].to_numpy())
    assert np.mean((predictions - rows["time"].to_numpy()) ** 2) == pytest.approx(min(losses), rel=1e-5)


def test_metrics_are_json_ready():
    result = fit(planted_pairs(), 8, embedding_dim=4, seed=0, **{**FAST, "max_epochs": 3})
    document = orjson.loads(orjson.dumps(result.metrics()))
    assert document["config"]["similarity"] == "dot" and document["settings"]["loss"] == "mse"
    assert document["settings"]["optimizer"] == "lazy_adam"
    assert set(document["test"]) == {
        f"{name}_{loss}" for name in ("model", "random", "train_mean") for loss in ("mse", "mae")
    }
    assert [row["epoch"] for row in document["history"]] == [1, 2, 3]


@pytest.mark.parametrize("similarity", ["dot", "cosine", "mlp"])
def test_save_and_load_round_trip_without_pickle(tmp_path, similarity):
    torch.manual_seed(0)
    original = contextual.ContextualModel(contextual.ModelConfig(12, 5, similarity, mlp_hidden=7, mlp_sigmoid=True))
    contextual.save_model(original, tmp_path / "model")
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == ["config.json", "weights.npz"]
    assert json.loads((tmp_path / "model" / "config.json").read_text())["similarity"] == similarity
    with np.load(tmp_path / "model" / "weights.npz", allow_pickle=False) as weights:
        assert weights["context.weight"].shape == (12, 5)
    loaded = contextual.load_model(tmp_path / "model")
    assert loaded.config == original.config
    ids = np.arange(12)
    assert np.array_equal(contextual.predict(original, ids, ids[::-1]), contextual.predict(loaded, ids, ids[::-1]))


def test_load_refuses_weights_of_another_shape(tmp_path):
    contextual.save_model(contextual.ContextualModel(contextual.ModelConfig(12, 5)), tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({**config, "embedding_dim": 6}))
    with pytest.raises(RuntimeError, match="size mismatch"):
        contextual.load_model(tmp_path / "model")


def test_bad_arguments_are_refused():
    pairs = planted_pairs()
    with pytest.raises(ValueError, match="similarity"):
        fit(pairs, 8, embedding_dim=4, similarity="lorentz", progress=False)
    with pytest.raises(ValueError, match="loss"):
        fit(pairs, 8, embedding_dim=4, loss="huber", progress=False)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\)"):
        fit(pairs, 5, embedding_dim=4, progress=False)
    with pytest.raises(ValueError, match="splits"):
        fit(pairs, 8, embedding_dim=4, splits=(0.5, 0.5, 0.5), progress=False)
    with pytest.raises(ValueError, match="too few"):
        fit(pairs.head(3), 8, embedding_dim=4, progress=False)
    with pytest.raises(TypeError, match="mlp_sigmoid must be a bool"):
        fit(pairs, 8, embedding_dim=4, mlp_sigmoid="false", progress=False)
    with pytest.raises(TypeError, match="embedding_dim must be an int"):
        contextual.ModelConfig(8, 4.0)
    with pytest.raises(ValueError, match="missing"):
        fit(pairs.drop(columns="time"), 8, embedding_dim=4, progress=False)


def structured_pairs(n_tracks: int = 300, count: int = 12_000, seed: int = 0) -> pd.DataFrame:
    """Listen times set by 4 hidden factors per track; tracks drawn by a skewed popularity, so some rows are rare."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n_tracks, 4))
    factors /= np.linalg.norm(factors, axis=1, keepdims=True)
    popularity = 1.0 / np.sqrt(np.arange(1, n_tracks + 1))
    popularity /= popularity.sum()
    context = rng.choice(n_tracks, size=count, p=popularity)
    track = rng.choice(n_tracks, size=count, p=popularity)
    times = 0.5 + 0.45 * np.sum(factors[context] * factors[track], axis=1) + rng.normal(0, 0.05, count)
    return pd.DataFrame({"context": context, "track": track, "time": np.clip(times, 0, 1)})


STRUCTURED = dict(
    embedding_dim=8,
    lr=0.01,
    batch_size=256,
    max_epochs=100,
    plateau_patience=2,
    early_stopping_patience=4,
    progress=False,
)


@pytest.mark.parametrize("similarity", contextual.SIMILARITIES)
def test_lazy_adam_learns_about_as_well_as_dense_adam(similarity):
    pairs = structured_pairs()
    dense, lazy = (
        fit(pairs, 300, similarity=similarity, seed=0, optimizer=optimizer, **STRUCTURED).test
        for optimizer in ("adam", "lazy_adam")
    )
    # Both learn the factors (the noise floor is 0.0025, the train mean's MSE about 0.055); lazy Adam lands within
    # 25% of dense (measured: -1% to +20% over seeds and similarities), a step that lost the moments or the
    # learning rate would not.
    assert dense["model_mse"] < 0.15 * dense["train_mean_mse"], dense
    assert lazy["model_mse"] < 0.15 * lazy["train_mean_mse"], lazy
    assert lazy["model_mse"] == pytest.approx(dense["model_mse"], rel=0.25)


def test_lazy_adam_is_deterministic_for_a_seed():
    pairs = structured_pairs(count=3000)
    settings = dict(similarity="mlp", optimizer="lazy_adam", **{**STRUCTURED, "embedding_dim": 6, "max_epochs": 5})
    runs = [fit(pairs, 300, seed=seed, **settings) for seed in (3, 3, 4)]
    first, again, other = (run.model.state_dict() for run in runs)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert runs[0].history == runs[1].history and runs[0].test == runs[1].test
    assert not all(torch.equal(first[name], other[name]) for name in first)


def lazy_and_dense_steps(
    rows: torch.Tensor, weight_decay: float, steps: int = 25, catch_up: bool = True
) -> tuple[dict, dict]:
    """Train a 6-row table on the given rows with LazyAdam (brought to the last step unless `catch_up` is False) and
    with fused dense Adam: weights and moments of each."""
    generator = torch.Generator().manual_seed(0)
    start, target = torch.randn(6, 3, generator=generator), torch.randn(len(rows), generator=generator)
    results = []
    for lazy in (True, False):
        table = nn.Embedding(6, 3, sparse=lazy)
        with torch.no_grad():
            table.weight.copy_(start)
        optimizer = (
            LazyAdam([table.weight], lr=0.05, weight_decay=weight_decay)
            if lazy
            else torch.optim.Adam(table.parameters(), lr=0.05, weight_decay=weight_decay, fused=True)
        )
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            ((table(rows).sum(-1) - target) ** 2).mean().backward()
            optimizer.step()
        if lazy and catch_up:
            optimizer.catch_up()
        results.append({"start": start, "weight": table.weight.detach().clone(), **optimizer.state[table.weight]})
    return results[0], results[1]


def test_lazy_adam_is_dense_adam_with_weight_decay_on_the_rows_a_batch_touches():
    every_row = torch.tensor([0, 1, 2, 3, 4, 5, 2, 4])
    lazy, dense = lazy_and_dense_steps(every_row, weight_decay=0.1)
    for name in ("weight", "exp_avg", "exp_avg_sq"):  # float32 rounding over 25 steps (weights about 1)
        assert torch.allclose(lazy[name], dense[name], rtol=0, atol=1e-6), name
    undecayed, _ = lazy_and_dense_steps(every_row, weight_decay=0.0)
    assert not torch.allclose(lazy["weight"], undecayed["weight"], atol=1e-3)


def test_lazy_adam_takes_the_steps_dense_adam_takes_on_rows_no_batch_touches():
    """Rows 1, 3 and 4 are never in a batch: dense Adam still shrinks them toward zero (their L2 gradient), and the
    catch-up takes the same steps late; without it they would keep their starting weights."""
    some_rows, untouched = torch.tensor([0, 2, 2, 5]), [1, 3, 4]
    for steps in (5, 25, 100):
        lazy, dense = lazy_and_dense_steps(some_rows, weight_decay=0.1, steps=steps)
        # Within 3 steps of lr (0.05 here): dense Adam overshoots zero and swings around it, the catch-up stops at it.
        assert (lazy["weight"] - dense["weight"]).abs().max() < 0.15, steps
        assert (lazy["weight"][untouched].abs() < lazy["start"][untouched].abs()).all()
    not_caught_up, _ = lazy_and_dense_steps(some_rows, weight_decay=0.1, catch_up=False)
    assert torch.equal(not_caught_up["weight"][untouched], not_caught_up["start"][untouched])
    # Without weight decay a never-touched row has no gradient at all, in both.
    lazy, dense = lazy_and_dense_steps(some_rows, weight_decay=0.0)
    assert torch.equal(lazy["weight"][untouched], dense["weight"][untouched])
    assert torch.allclose(lazy["weight"], dense["weight"], atol=1e-6)


def test_a_catch_up_takes_the_steps_dense_adam_takes_on_a_row_in_mid_training():
    """Rows in the state of a training's later epochs (the course's lr and weight decay, momenta and second moments
    of its size, step 5,000), left out of the next k batches: the catch-up must move them as k steps of dense Adam
    with only the L2 gradient do. Popular rows miss a few steps at a time, the common case: there the L2 gradient
    enters the momentum at the share 1 - beta1^j dense Adam gives it by step j. Taking all of it from the first step
    left a row, after one missed step, almost as far from dense Adam's as dense Adam had moved it (and the dot models'
    test MSE 4-5% off dense Adam's)."""
    generator = torch.Generator().manual_seed(0)
    rows, width, step, lr, weight_decay = 64, 16, 5000, 1e-3, 1e-5
    start = torch.randn(rows, width, generator=generator) * 0.1
    momentum = torch.randn(rows, width, generator=generator) * 1e-6
    second = (2e-6) ** 2 * (0.5 + torch.rand(rows, width, generator=generator))  # a sum of many squared gradients
    for missed in (1, 4, 20, 400):
        lazy_table, dense_table = nn.Parameter(start.clone()), nn.Parameter(start.clone())
        lazy = LazyAdam([lazy_table], lr=lr, weight_decay=weight_decay)
        state = lazy._state(lazy_table)
        state.update(step=step + missed, exp_avg=momentum.clone(), exp_avg_sq=second.clone())
        state["last_step"].fill_(step)
        lazy.catch_up()
        dense = torch.optim.Adam([dense_table], lr=lr, weight_decay=weight_decay)
        dense.state[dense_table].update(
            step=torch.tensor(float(step)), exp_avg=momentum.clone(), exp_avg_sq=second.clone()
        )
        for _ in range(missed):
            dense_table.grad = torch.zeros_like(dense_table)
            dense.step()
        moved = (dense_table - start).norm(dim=1)
        apart = (lazy_table - dense_table).norm(dim=1)
        # Measured: 0.04% of the way apart over one step (0.09% at most), 0.3% over four, 1.8% over 20 (15% at most,
        # rows whose coast and L2 shrink nearly cancel), 0.9% over 400; before the mend, 95% over one step.
        share = apart / moved
        assert share.median() < 0.025, (missed, float(share.median()))
        assert missed > 4 or share.max() < 0.01, (missed, float(share.max()))


def test_a_row_that_fades_out_keeps_its_direction_at_a_negligible_norm():
    """Rows 1-4 are never in a batch and fade out: they keep a direction (as dense Adam's residue does) instead of
    exact zeros, which would give every such track one tie-broken export list."""
    lazy, _ = lazy_and_dense_steps(torch.tensor([0, 0, 5]), weight_decay=0.1, steps=200)
    faded = lazy["weight"][1:5]
    norms = faded.norm(dim=1)
    assert (norms > 0).all() and torch.allclose(norms, torch.full_like(norms, FADED_ROW_NORM), rtol=1e-3)
    assert (nn.functional.cosine_similarity(faded, lazy["start"][1:5]) > 0.5).all()
    assert len({tuple(row) for row in torch.sign(faded).tolist()}) > 1  # not one shared direction
    assert not ((faded.abs() > 0) & (faded.abs() < NEGLIGIBLE_WEIGHT)).any()


def test_lazy_adam_refuses_dense_gradients():
    table = nn.Embedding(4, 2)
    optimizer = LazyAdam([table.weight], lr=0.1)
    table(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        optimizer.step()


def test_plateau_lowers_the_rate_of_every_optimizer(monkeypatch):
    scheduled: list[torch.optim.Optimizer] = []

    class Recording(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def __init__(self, optimizer, *args, **kwargs):
            super().__init__(optimizer, *args, **kwargs)
            scheduled.append(optimizer)

    monkeypatch.setattr(torch.optim.lr_scheduler, "ReduceLROnPlateau", Recording)
    rng = np.random.default_rng(2)
    noise = pd.DataFrame(
        {"context": rng.integers(50, size=400), "track": rng.integers(50, size=400), "time": rng.random(400)}
    )
    result = fit(
        noise,
        50,
        embedding_dim=8,
        similarity="mlp",
        optimizer="lazy_adam",
        seed=0,
        lr=0.05,
        batch_size=32,
        max_epochs=30,
        plateau_patience=1,
        early_stopping_patience=6,
        progress=False,
    )
    groups = [group for optimizer in scheduled for group in optimizer.param_groups]
    assert len(scheduled) == 2  # LazyAdam for the tables, Adam for the MLP
    assert {id(param) for group in groups for param in group["params"]} == {id(p) for p in result.model.parameters()}
    assert all(group["lr"] < 0.05 for group in groups), [group["lr"] for group in groups]


def test_unknown_optimizer_is_refused_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"optimizer must be one of \('lazy_adam', 'adam'\), got 'sgd'"):
        fit(planted_pairs(), 8, embedding_dim=4, optimizer="sgd", progress=False)


def test_lazily_trained_model_round_trips_as_a_plain_model(tmp_path):
    result = fit(
        planted_pairs(),
        8,
        embedding_dim=5,
        similarity="mlp",
        optimizer="lazy_adam",
        seed=2,
        **{**FAST, "max_epochs": 5},
    )
    assert not (result.model.context.sparse or result.model.track.sparse)
    contextual.save_model(result.model, tmp_path / "model")
    loaded = contextual.load_model(tmp_path / "model")
    assert loaded.config == result.model.config
    assert list(loaded.state_dict()) == list(result.model.state_dict())
    ids = np.arange(8)
    assert np.array_equal(contextual.predict(result.model, ids, ids[::-1]), contextual.predict(loaded, ids, ids[::-1]))


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("loss", contextual.LOSSES)
def test_the_compiled_training_step_is_torchs_forward_backward_and_lazy_adam_step(similarity, loss):
    """Every row in every batch (so no row misses a step): 30 compiled steps land where 30 steps through torch's
    autograd and LazyAdam.step do, to float32 rounding; rows repeat within a batch, so their gradients must add."""
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(6, 5, generator=generator) * 0.5 for _ in range(2)]
    context_ids, track_ids = torch.tensor([0, 1, 2, 3, 4, 5, 2, 4, 1, 0]), torch.tensor([5, 4, 3, 2, 1, 0, 0, 3, 3, 1])
    target = torch.rand(10, generator=generator)
    tables = []
    for compiled in (True, False):
        model = contextual.ContextualModel(contextual.ModelConfig(6, 5, similarity), sparse_gradients=True)
        with torch.no_grad():
            model.context.weight.copy_(start[0])
            model.track.weight.copy_(start[1])
        optimizer = LazyAdam([model.context.weight, model.track.weight], lr=0.05, weight_decay=0.1)
        for _ in range(30):
            if compiled:
                kind = {"cosine": similarity == "cosine", "absolute": loss == "mae"}
                optimizer.train_pairs(context_ids.numpy(), track_ids.numpy(), target.numpy(), **kind)
            else:
                optimizer.zero_grad(set_to_none=True)
                contextual._loss_function(loss)(model(context_ids, track_ids), target).backward()
                optimizer.step()
        tables.append([model.context.weight.detach().clone(), model.track.weight.detach().clone()])
    # torch's sqrt and rsqrt run in MKL's vector math, which is not correctly rounded and rounds differently in each of
    # its code branches: on an Intel Xeon the cosine tables came out 1.0e-6 (MKL's SSE2 branch) to 2.6e-6 (its AVX2
    # branch) apart after 30 steps, under 2e-6 on the AMD EPYCs; a wrong gradient or a missed step moves them by 1e-3
    # and more.
    for compiled_table, torch_table in zip(*tables):
        assert torch.allclose(compiled_table, torch_table, rtol=0, atol=1e-5)
    assert not torch.allclose(tables[0][0], start[0], atol=0.1)  # the steps moved the weights


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two cores for numba's threads")
@pytest.mark.parametrize(("similarity", "loss"), [("dot", "mse"), ("cosine", "mse"), ("cosine", "mae")])
def test_the_compiled_steps_give_the_same_bits_on_one_thread_and_two(similarity, loss):
    """On two threads the compiled step shares a batch's pairs and rows out among them, on one it runs the one-pass
    loop; popular tracks repeat within a batch and rows miss steps between batches, so a row's gradient sums many
    pairs and catch-ups run in every step."""
    rng = np.random.default_rng(7)
    n_tracks, count = 400, 12_000
    pairs = pd.DataFrame(
        {
            "context": np.minimum(rng.zipf(1.6, size=count) - 1, n_tracks - 1),
            "track": rng.integers(n_tracks, size=count),
            "time": rng.random(count).round(3),
        }
    )
    settings = dict(embedding_dim=24, similarity=similarity, loss=loss, seed=2, lr=0.01, batch_size=700, max_epochs=3)
    one, two = (fit(pairs, n_tracks, kernel_threads=threads, **settings) for threads in (1, 2))
    for name, weights in one.model.state_dict().items():
        assert torch.equal(weights, two.model.state_dict()[name]), name
    assert one.history == two.history and one.test == two.test
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS  # the training gave the threads back


def test_the_compiled_step_needs_the_two_tables():
    table = nn.Embedding(4, 2, sparse=True)
    optimizer = LazyAdam([table.weight], lr=0.1)
    with pytest.raises(TypeError, match="exactly two tables"):
        optimizer.train_pairs(np.array([0]), np.array([1]), np.array([0.5], dtype=np.float32), False, False)
