"""The Indexed recommender's model: personal track lists from a collaborative model of the collected log.

The course trained LightFM on positive interactions (listen time > 0.8). Here a small torch BPR model
(implicit-feedback matrix factorisation: user and track factors plus a track bias, trained so a user's positive
track outscores a uniformly sampled one) plays that part; every random choice flows from the seed.

Nothing is excluded from a user's list, seen tracks included: the simulator zeroes only repeats inside one
session, so a track a user loved in an earlier session is still a good pick in the next one (the course's
LightFM lists did not filter them either). Pass `exclude_seen=True` to `recommend_users` to filter them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import torch
from torch.nn import functional as F

from botify_lab.formats import atomic_write_bytes
from botify_lab.research.export import top_k_columns
from botify_lab.research.model import torch_setup

POSITIVE_TIME = 0.8
USER_BLOCK = 512


@dataclass
class CollaborativeModel:
    """Trained factors; `users[i]` is the user id of `user_factors[i]`, track ids index `track_factors`."""

    users: np.ndarray
    user_factors: np.ndarray
    track_factors: np.ndarray
    track_bias: np.ndarray
    history: list[dict]


def positive_interactions(events: pd.DataFrame, threshold: float = POSITIVE_TIME) -> pd.DataFrame:
    """Distinct (user, track) pairs listened to longer than `threshold`, with how often (columns user, track, count).

    Every logged row counts, including a session's first track (time 1.0): the user's own pick from their
    interests is the clearest positive there is.
    """
    positive = events.loc[events["time"] > threshold, ["user", "track"]]
    counts = positive.groupby(["user", "track"], sort=True).size().rename("count").reset_index()
    return counts


def train_bpr(
    interactions: pd.DataFrame,
    n_tracks: int,
    *,
    factors: int = 32,
    epochs: int = 30,
    lr: float = 0.01,
    regularization: float = 1e-4,
    batch_size: int = 4096,
    seed: int = 0,
    num_threads: int | None = 1,
    progress: bool = True,
) -> CollaborativeModel:
    """Bayesian personalised ranking on the positive (user, track) pairs, one uniform negative track per pair."""
    if interactions.empty:
        raise ValueError("no positive interactions to learn from")
    tracks = interactions["track"].to_numpy(dtype=np.int64)
    if tracks.min() < 0 or tracks.max() >= n_tracks:
        raise ValueError(f"track ids must lie in [0, {n_tracks})")
    users, user_index = np.unique(interactions["user"].to_numpy(dtype=np.int64), return_inverse=True)
    user_ids = torch.as_tensor(user_index, dtype=torch.int64)
    track_ids = torch.from_numpy(tracks.copy())
    with torch_setup(num_threads):
        return _fit_bpr(users, user_ids, track_ids, n_tracks, factors, epochs, lr, regularization, batch_size, seed,
                        progress)


def _fit_bpr(users, user_ids, track_ids, n_tracks, factors, epochs, lr, regularization, batch_size, seed, progress):
    """The BPR loop; every draw (initial factors, pair order, negatives) comes from one seeded generator."""
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    user_table = torch.nn.Parameter(torch.randn(len(users), factors, generator=generator) * 0.1)
    track_table = torch.nn.Parameter(torch.randn(n_tracks, factors, generator=generator) * 0.1)
    track_bias = torch.nn.Parameter(torch.zeros(n_tracks))
    optimizer = torch.optim.Adam([user_table, track_table, track_bias], lr=lr, fused=True)
    history = []
    for epoch in tqdm(range(1, epochs + 1), desc="bpr", disable=not progress):
        order = torch.randperm(len(user_ids), generator=generator)
        negatives = torch.randint(n_tracks, (len(user_ids),), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            # F.embedding rather than tensor indexing: its backward is a fast scatter, not a sorted index_put.
            user = F.embedding(user_ids[batch], user_table)
            positive = F.embedding(track_ids[batch], track_table)
            negative = F.embedding(negatives[batch], track_table)
            bias = F.embedding(torch.stack([track_ids[batch], negatives[batch]], 1), track_bias[:, None]).squeeze(-1)
            margin = (user * (positive - negative)).sum(1) + bias[:, 0] - bias[:, 1]
            penalty = regularization * (user.pow(2).sum() + positive.pow(2).sum() + negative.pow(2).sum()) / len(batch)
            loss = -F.logsigmoid(margin).mean() + penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        history.append({"epoch": epoch, "loss": total / len(order)})
    return CollaborativeModel(
        users=users,
        user_factors=user_table.detach().numpy().copy(),
        track_factors=track_table.detach().numpy().copy(),
        track_bias=track_bias.detach().numpy().copy(),
        history=history,
    )


def recommend_users(
    model: CollaborativeModel,
    n: int = 100,
    *,
    exclude_seen: bool = False,
    interactions: pd.DataFrame | None = None,
) -> dict[int, list[int]]:
    """Each trained user's n best tracks, best first (ties to the smaller id); see the module note on seen tracks."""
    n_tracks = len(model.track_bias)
    if exclude_seen and interactions is None:
        raise ValueError("exclude_seen needs the interactions the model was trained on")
    if not 1 <= n <= n_tracks:
        raise ValueError(f"n must lie in [1, {n_tracks}], got {n}")
    track_factors = torch.from_numpy(model.track_factors)
    track_bias = torch.from_numpy(model.track_bias)
    seen = None
    if exclude_seen:
        positions = np.searchsorted(model.users, interactions["user"].to_numpy())
        seen = pd.DataFrame({"row": positions, "track": interactions["track"].to_numpy()})
    recommendations: dict[int, list[int]] = {}
    with torch.no_grad():
        for start in range(0, len(model.users), USER_BLOCK):
            rows = slice(start, start + USER_BLOCK)
            scores = torch.from_numpy(model.user_factors[rows]) @ track_factors.T + track_bias
            if seen is not None:
                block = seen[(seen["row"] >= start) & (seen["row"] < start + len(scores))]
                rows_seen = torch.from_numpy(block["row"].to_numpy(dtype=np.int64, copy=True) - start)
                scores[rows_seen, torch.from_numpy(block["track"].to_numpy(dtype=np.int64, copy=True))] = -torch.inf
            for user, tracks in zip(model.users[rows], top_k_columns(scores, n).tolist()):
                recommendations[int(user)] = tracks
    return recommendations


def write_user_recommendations(recommendations: Mapping[int, Sequence[int]], out_path: Path | str) -> Path:
    """The service's user-recommendations file: JSONL `{"user": id, "tracks": [ids]}`, users ascending, atomic."""
    lines = [
        orjson.dumps({"user": int(user), "tracks": [int(track) for track in recommendations[user]]})
        for user in sorted(recommendations)
    ]
    return atomic_write_bytes(out_path, b"\n".join(lines) + b"\n" if lines else b"")
