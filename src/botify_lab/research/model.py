"""The course's week-4 contextual model and the homework's variants, trained with plain torch (no Lightning).

Two embedding tables sized to the catalog: "context" (a session's first track) and "track" (the track listened
to). The predicted listen time is their similarity: `dot` (the course's), `cosine` (the homework's) or `mlp`
(concatenation through two ReLU layers, optionally squashed by a sigmoid). Training indexes tensors directly in
large batches (no DataLoader), and every random choice comes from the seed, so a seed gives identical weights.
Two optimizers: the course's dense Adam, and a lazy Adam that updates only the rows a batch touches (with it, a
dot or cosine model trains without torch's graph, each batch one compiled call: `LazyAdam.train_pairs`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from botify_lab.research.choices import LOSSES, OPTIMIZERS, SIMILARITIES
from botify_lab.research.lazy_adam import COSINE_EPS, LazyAdam, compiled_threads

WEIGHTS_FILE = "weights.npz"
CONFIG_FILE = "config.json"
EVAL_BATCH = 1 << 16


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network's shape; stored beside the weights as JSON."""

    n_tracks: int
    embedding_dim: int
    similarity: str = "dot"
    mlp_hidden: int = 64
    mlp_sigmoid: bool = False
    init_std: float = 0.1

    def __post_init__(self) -> None:
        for name in ("n_tracks", "embedding_dim", "mlp_hidden"):
            if type(getattr(self, name)) is not int:
                raise TypeError(f"{name} must be an int, got {getattr(self, name)!r}")
        if type(self.mlp_sigmoid) is not bool:
            # A papermill `-p mlp_sigmoid false` arrives as the truthy string "false".
            raise TypeError(
                f"mlp_sigmoid must be a bool, got {self.mlp_sigmoid!r} (papermill reads `-p x false` as a string; "
                "pass False/True or use -y)"
            )
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        if self.n_tracks < 1 or self.embedding_dim < 1 or self.mlp_hidden < 1:
            raise ValueError(f"n_tracks, embedding_dim and mlp_hidden must be positive: {self}")


class ContextualModel(nn.Module):
    """Predicted listen time of `track` in a session that started with `context`.

    Embeddings start at N(0, init_std) rather than torch's N(0, 1): with unit entries a 128-dim dot product starts
    near +-11 while listen times lie in [0, 1], and the first epochs would only undo that.

    `sparse_gradients` makes the tables' gradients sparse rows, for lazy training; it is kept out of the config
    because it changes neither the weights' shapes nor the predictions, so any saved model loads as a plain one.
    """

    def __init__(self, config: ModelConfig, sparse_gradients: bool = False):
        super().__init__()
        self.config = config
        self.context = nn.Embedding(config.n_tracks, config.embedding_dim, sparse=sparse_gradients)
        self.track = nn.Embedding(config.n_tracks, config.embedding_dim, sparse=sparse_gradients)
        nn.init.normal_(self.context.weight, std=config.init_std)
        nn.init.normal_(self.track.weight, std=config.init_std)
        self.mlp = None
        if config.similarity == "mlp":
            layers: list[nn.Module] = [
                nn.Linear(2 * config.embedding_dim, config.mlp_hidden),
                nn.ReLU(),
                nn.Linear(config.mlp_hidden, config.mlp_hidden),
                nn.ReLU(),
                nn.Linear(config.mlp_hidden, 1),
            ]
            if config.mlp_sigmoid:
                layers.append(nn.Sigmoid())
            self.mlp = nn.Sequential(*layers)

    def score(self, context_vectors: torch.Tensor, track_vectors: torch.Tensor) -> torch.Tensor:
        """Similarity of matching rows of two embedding batches (the model's own notion of closeness)."""
        similarity = self.config.similarity
        if similarity == "dot":
            return (context_vectors * track_vectors).sum(-1)
        if similarity == "cosine":
            # x.y / max(|x| |y|, eps), written out: torch's F.cosine_similarity computes the same (within 1e-7) but
            # its backward pass costs 4.6 times as much (5.9 ms against 1.3 ms per 2,048 pairs of dimension 128).
            dot = (context_vectors * track_vectors).sum(-1)
            squares = (context_vectors * context_vectors).sum(-1) * (track_vectors * track_vectors).sum(-1)
            return dot / squares.clamp_min(COSINE_EPS**2).sqrt()
        return self.mlp(torch.cat([context_vectors, track_vectors], dim=-1)).squeeze(-1)

    def forward(self, context_ids: torch.Tensor, track_ids: torch.Tensor) -> torch.Tensor:
        return self.score(self.context(context_ids), self.track(track_ids))


@dataclass
class TrainingResult:
    """A trained model with what it took to get there: per-epoch history and the held-out test metrics."""

    model: ContextualModel
    settings: dict
    history: list[dict] = field(default_factory=list)
    test: dict = field(default_factory=dict)
    best_epoch: int = 0
    sizes: dict = field(default_factory=dict)
    test_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # rows of the pairs held out

    def metrics(self, digits: int = 6) -> dict:
        """JSON-able summary for metrics/train_<model>.json: floats rounded so reruns compare byte for byte."""
        return {
            "config": asdict(self.model.config),
            "settings": self.settings,
            "sizes": self.sizes,
            "best_epoch": self.best_epoch,
            "epochs": len(self.history),
            "test": {name: round(float(value), digits) for name, value in self.test.items()},
            "history": [
                {key: round(float(value), digits) if isinstance(value, float) else value for key, value in row.items()}
                for row in self.history
            ],
        }

    def headline(self, digits: int = 6) -> dict:
        """The numbers worth a column in `dvc exp show`: the split sizes, the best epoch and the test errors."""
        full = self.metrics(digits)
        return {key: full[key] for key in ("sizes", "best_epoch", "epochs", "test")}


@contextlib.contextmanager
def torch_setup(num_threads: int | None = 1, strict_determinism: bool = False) -> Iterator[None]:
    """Thread count and optional strict deterministic kernels for the block, restoring the caller's setup.

    One thread is the default: these batches are small, and when other processes share the 2 cores torch's
    two OpenMP threads spin against each other (measured: 26 s per epoch instead of 2 s; a whole lazy training
    of the 128-dim model 233 s instead of 13 s). On 2 idle cores 2 threads gain little (that training 9 s
    instead of 13 s, the 10-dim one 4 s either way) and change the last bits of the validation and test losses
    (float32 sums over more pairs than torch's parallel grain), which early stopping and the lr plateau compare.
    The CPU kernels used here (embedding backward, sparse rows, matmul, fused Adam) give identical weights for
    any thread count; torch's strict mode swaps the embedding backward for a path about 3x slower with the same
    result, so it is opt-in. The mode is set and restored only when it changes: setting it imports torch's inductor
    (1.4 s, on every training and export).
    """
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    if strict_determinism and not was_deterministic:
        torch.use_deterministic_algorithms(True)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if torch.are_deterministic_algorithms_enabled() != was_deterministic:
            torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def _pair_tensors(pairs: pd.DataFrame, n_tracks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    missing = {"context", "track", "time"} - set(pairs.columns)
    if missing:
        raise ValueError(f"training pairs need columns context, track, time; missing {sorted(missing)}")
    context = torch.as_tensor(pairs["context"].to_numpy(dtype=np.int64, copy=True))
    track = torch.as_tensor(pairs["track"].to_numpy(dtype=np.int64, copy=True))
    target = torch.as_tensor(pairs["time"].to_numpy(dtype=np.float32, copy=True))
    for name, ids in (("context", context), ("track", track)):
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= n_tracks):
            raise ValueError(f"{name} ids must lie in [0, {n_tracks}); got [{int(ids.min())}, {int(ids.max())}]")
    if not torch.isfinite(target).all():
        raise ValueError("listen times must be finite")
    return context, track, target


def split_indices(count: int, splits: tuple[float, float, float], generator: torch.Generator) -> list[torch.Tensor]:
    """A seeded random partition of range(count) into train/validation/test by the given shares."""
    if len(splits) != 3 or any(share < 0 for share in splits) or abs(sum(splits) - 1.0) > 1e-9:
        raise ValueError(f"splits must be three non-negative shares summing to 1, got {splits}")
    permutation = torch.randperm(count, generator=generator)
    n_train = int(round(count * splits[0]))
    n_val = int(round(count * splits[1]))
    parts = [permutation[:n_train], permutation[n_train : n_train + n_val], permutation[n_train + n_val :]]
    if any(len(part) == 0 for part in parts):
        raise ValueError(f"{count} pairs are too few to split {splits} into non-empty train/validation/test sets")
    return parts


def _loss_function(loss: str):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return F.mse_loss if loss == "mse" else F.l1_loss


def _id_tensor(ids: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(ids, torch.Tensor):
        return ids.to(torch.int64)
    return torch.from_numpy(np.array(ids, dtype=np.int64))


@torch.no_grad()
def predict(model: ContextualModel, context: np.ndarray | torch.Tensor, track: np.ndarray | torch.Tensor) -> np.ndarray:
    """Predicted listen times for matching arrays of context and track ids."""
    model.eval()
    context, track = _id_tensor(context), _id_tensor(track)
    chunks = [model(context[i : i + EVAL_BATCH], track[i : i + EVAL_BATCH]) for i in range(0, len(context), EVAL_BATCH)]
    return torch.cat(chunks).numpy() if chunks else np.zeros(0, dtype=np.float32)


def _optimizers(model: ContextualModel, name: str, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
    """The course's dense Adam over everything, or LazyAdam over the two tables plus dense Adam over the MLP."""
    if name == "adam":
        return [torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)]
    optimizers: list[torch.optim.Optimizer] = [
        LazyAdam([model.context.weight, model.track.weight], lr=lr, weight_decay=weight_decay)
    ]
    if model.mlp is not None:
        optimizers.append(torch.optim.Adam(model.mlp.parameters(), lr=lr, weight_decay=weight_decay, fused=True))
    return optimizers


def _torch_step(model: ContextualModel, optimizers: list, loss_fn, train: tuple) -> Callable[[torch.Tensor], float]:
    """A training step through torch's autograd: forward, backward, then every optimiser's step."""

    def step(batch: torch.Tensor) -> float:
        batch_loss = loss_fn(model(train[0][batch], train[1][batch]), train[2][batch])
        for each in optimizers:
            each.zero_grad(set_to_none=True)
        batch_loss.backward()
        for each in optimizers:
            each.step()
        return float(batch_loss.detach())

    return step


def _compiled_step(optimizer: LazyAdam, train: tuple, similarity: str, loss: str) -> Callable[[torch.Tensor], float]:
    """A training step of a dot or cosine model as one compiled call (`LazyAdam.train_pairs`): an epoch of the
    default data took 2.4 s (the 2023 model) and 3.2 s (ours) through torch's graph and LazyAdam.step, 1.2 and 1.4 s
    so."""
    context, track, target = (each.numpy() for each in train)
    kind = {"cosine": similarity == "cosine", "absolute": loss == "mae"}

    def step(batch: torch.Tensor) -> float:
        ids = batch.numpy()
        return optimizer.train_pairs(context[ids], track[ids], target[ids], **kind)

    return step


def _mean_loss(model: ContextualModel, loss_fn, context, track, target) -> float:
    predictions = torch.as_tensor(predict(model, context, track))
    return float(loss_fn(predictions, target, reduction="sum")) / len(target)


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that defines a fit: the model's shape, its loss and optimiser, the schedule, the split and the
    seed. No defaults: params.yaml (a model's section of `models:`, the `train:` section and `seed`) is their home."""

    embedding_dim: int
    similarity: str
    loss: str
    mlp_hidden: int
    mlp_sigmoid: bool
    optimizer: str
    init_std: float
    lr: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    plateau_patience: int
    early_stopping_patience: int
    splits: tuple[float, float, float]
    seed: int

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        object.__setattr__(self, "splits", tuple(self.splits))

    def record(self) -> dict:
        """The optimisation settings a training record keeps (the model's shape is in its config)."""
        keys = ("loss", "optimizer", "lr", "weight_decay", "batch_size", "max_epochs", "plateau_patience")
        return {
            **{key: getattr(self, key) for key in (*keys, "early_stopping_patience", "seed")},
            "splits": list(self.splits),
        }


def train_contextual(
    pairs: pd.DataFrame,
    n_tracks: int,
    settings: TrainingSettings,
    *,
    num_threads: int | None = 1,
    kernel_threads: int | None = None,
    strict_determinism: bool = False,
    progress: bool = True,
) -> TrainingResult:
    """Fit the model on (context, track, time) pairs as the course's week-4 seminar did.

    Adam with weight decay, learning rate reduced on a validation-loss plateau, early stopping on validation
    loss; the best epoch's weights are kept. Test metrics compare the model with a uniform random guess in
    [0, 1) and with always predicting the train mean (MSE and MAE of each).

    `optimizer="adam"` is the course's dense Adam, which updates every row of both tables at every step.
    `"lazy_adam"` (the default) computes only the rows a batch touches: sparse table gradients through `LazyAdam`,
    which takes the other rows' dense-Adam steps late, in closed form (so the result follows dense Adam's), and
    dense Adam for the MLP. The learning-rate plateau acts at epoch ends, after `LazyAdam.catch_up`, so every
    missed step of an epoch used that epoch's rate, as dense Adam did.

    `num_threads` is torch's thread count (the MLP, validation and test), `kernel_threads` that of LazyAdam's compiled
    steps (None: numba's, every core); neither changes a bit of the result.
    """
    from tqdm import tqdm

    config = ModelConfig(
        n_tracks,
        settings.embedding_dim,
        settings.similarity,
        settings.mlp_hidden,
        settings.mlp_sigmoid,
        settings.init_std,
    )
    loss_fn = _loss_function(settings.loss)
    lazy = settings.optimizer == "lazy_adam"
    batch_size, seed = settings.batch_size, settings.seed
    context, track, target = _pair_tensors(pairs, n_tracks)
    with torch_setup(num_threads, strict_determinism), compiled_threads(kernel_threads):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        train_idx, val_idx, test_idx = split_indices(len(target), settings.splits, generator)
        model = ContextualModel(config, sparse_gradients=lazy)
        optimizers = _optimizers(model, settings.optimizer, settings.lr, settings.weight_decay)
        schedulers = [
            torch.optim.lr_scheduler.ReduceLROnPlateau(each, mode="min", patience=settings.plateau_patience)
            for each in optimizers
        ]
        train = (context[train_idx], track[train_idx], target[train_idx])
        if lazy and settings.similarity != "mlp":
            batch_step = _compiled_step(optimizers[0], train, settings.similarity, settings.loss)
        else:
            batch_step = _torch_step(model, optimizers, loss_fn, train)
        val = (context[val_idx], track[val_idx], target[val_idx])
        history: list[dict] = []
        best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
        epochs = tqdm(
            range(1, settings.max_epochs + 1),
            desc=f"train {settings.similarity} d={settings.embedding_dim}",
            disable=not progress,
        )
        for epoch in epochs:
            model.train()
            current_lr = optimizers[0].param_groups[0]["lr"]
            order = torch.randperm(len(train_idx), generator=generator)
            total = 0.0
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                total += batch_step(batch) * len(batch)
            for each in optimizers:
                if isinstance(each, LazyAdam):
                    each.catch_up()  # the epoch's weights as dense Adam has them, before they are judged and kept
            val_loss = _mean_loss(model, loss_fn, *val)
            for scheduler in schedulers:
                scheduler.step(val_loss)
            history.append({"epoch": epoch, "train_loss": total / len(order), "val_loss": val_loss, "lr": current_lr})
            epochs.set_postfix(train=f"{total / len(order):.4f}", val=f"{val_loss:.4f}", lr=f"{current_lr:.1e}")
            if val_loss < best_loss:
                best_loss, best_epoch, stale = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= settings.early_stopping_patience:
                    break
        model.load_state_dict(best_state)
        model.context.sparse = model.track.sparse = False  # hand back a plain model, as load_model builds it
        test_metrics = _test_metrics(model, context[test_idx], track[test_idx], target[test_idx], train[2], generator)
    sizes = {"pairs": len(target), "train": len(train_idx), "validation": len(val_idx), "test": len(test_idx)}
    return TrainingResult(model, settings.record(), history, test_metrics, best_epoch, sizes, test_idx.numpy())


def _test_metrics(model, context, track, target, train_target, generator) -> dict:
    """Model vs the two baselines the course reported: a uniform random guess and the train mean."""
    predictions = torch.as_tensor(predict(model, context, track))
    random_guess = torch.rand(len(target), generator=generator)
    train_mean = torch.full_like(target, float(train_target.mean()))
    metrics = {}
    for name, guess in (("model", predictions), ("random", random_guess), ("train_mean", train_mean)):
        metrics[f"{name}_mse"] = float(F.mse_loss(guess, target))
        metrics[f"{name}_mae"] = float(F.l1_loss(guess, target))
    return metrics


def save_model(model: ContextualModel, directory: Path | str) -> Path:
    """Write `weights.npz` (plain arrays, no pickle) and `config.json` into `directory`, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".npz", delete=False) as handle:
        np.savez(handle, **arrays)
    os.replace(handle.name, directory / WEIGHTS_FILE)
    config_text = json.dumps(asdict(model.config), indent=2, sort_keys=True) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".json", delete=False, encoding="utf-8") as handle:
        handle.write(config_text)
    os.replace(handle.name, directory / CONFIG_FILE)
    return directory


def load_model(directory: Path | str) -> ContextualModel:
    """Rebuild a model saved by `save_model`; refuses pickled content and mismatched shapes."""
    directory = Path(directory)
    config = ModelConfig(**json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")))
    model = ContextualModel(config)
    with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as weights:
        state = {name: torch.from_numpy(weights[name].copy()) for name in weights.files}
    model.load_state_dict(state, strict=True)
    model.eval()
    return model
