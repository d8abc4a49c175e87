"""Timings of the research code at pipeline sizes; prints one JSON object.

A synthetic log (seeded, ~300k events over 50k tracks and 10k users, rotated into three files) stands in for a
collected log, so the figures do not depend on the simulator or the service:

    .venv/bin/python bench/research_bench.py [--sessions 45000] [--epochs 5] [--tracks 50000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from botify_lab.pipeline.params import load_params
from botify_lab.research import ab, collab, export, logs, model
from botify_lab.stages.train import training_settings

ROTATE_EVERY = 100_000
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write_synthetic_log(folder: Path, *, sessions: int, n_users: int, n_tracks: int, seed: int) -> int:
    """Sessions of 2..11 rows with two interleaving A/B arms, written as RotatingFileHandler would rotate them."""
    rng = np.random.default_rng(seed)
    lines: list[bytes] = []
    stamp = 1_677_689_471_912
    for _ in range(sessions):
        user = int(rng.integers(n_users))
        track, time_listened = int(rng.integers(n_tracks)), 1.0
        length = int(rng.integers(2, 12))
        for position in range(length):
            stamp += int(rng.integers(0, 3))
            closing = position == length - 1
            recommendation = None if closing else int(rng.integers(n_tracks))
            lines.append(
                orjson.dumps(
                    {
                        "message": "last" if closing else "next",
                        "timestamp": stamp,
                        "user": user,
                        "track": track,
                        "time": time_listened,
                        "latency": float(rng.random() * 1e-3),
                        "recommendation": recommendation,
                        "experiments": {"BENCH": "C" if user % 2 else "T1"},
                    }
                )
            )
            if recommendation is not None:
                track, time_listened = recommendation, round(float(rng.random()), 2)
    chunks = [lines[start : start + ROTATE_EVERY] for start in range(0, len(lines), ROTATE_EVERY)]
    names = ["data.json"] + [f"data.json.{index}" for index in range(1, len(chunks))]
    for name, chunk in zip(names, reversed(chunks)):
        (folder / name).write_bytes(b"\n".join(chunk) + b"\n")
    return len(lines)


def timed(results: dict, name: str, function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    results[name] = round(time.perf_counter() - start, 3)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=45_000)
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=5, help="fixed epochs of the 128-dim cosine training")
    args = parser.parse_args()
    seconds: dict = {}
    sizes: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        sizes["events"] = write_synthetic_log(
            folder, sessions=args.sessions, n_users=args.users, n_tracks=args.tracks, seed=0
        )
        events = timed(seconds, "read_log", logs.read_log, folder)
        sessions = timed(seconds, "sessionize", logs.sessionize, events)
        pairs = timed(seconds, "training_pairs", logs.training_pairs, events)
        timed(seconds, "top_tracks", logs.top_tracks, events)
        metrics = timed(seconds, "user_metrics", ab.user_metrics, sessions, "BENCH")
        timed(seconds, "ab_effects", ab.ab_effects, metrics)
        sizes.update(sessions=len(sessions), pairs=len(pairs), users=len(metrics))
        params = load_params(PARAMS)  # the pipeline's optimisation settings, the homework model's shape varied
        training = training_settings(params.simulate.treatment, params)
        for dim, similarity in ((10, "dot"), (128, "cosine")):
            result = timed(
                seconds,
                f"train_{similarity}_{dim}",
                model.train_contextual,
                pairs,
                args.tracks,
                dataclasses.replace(
                    training,
                    embedding_dim=dim,
                    similarity=similarity,
                    max_epochs=args.epochs,
                    early_stopping_patience=args.epochs,
                ),
                progress=False,
            )
            seconds[f"train_{similarity}_{dim}_per_epoch"] = round(
                seconds[f"train_{similarity}_{dim}"] / len(result.history), 3
            )
            timed(seconds, f"export_{similarity}_{dim}", export.top_k_neighbours, result.model, 10, progress=False)
        positives = collab.positive_interactions(events)
        sizes["positives"] = len(positives)
        bpr = timed(seconds, "train_bpr", collab.train_bpr, positives, args.tracks, seed=0, progress=False)
        timed(seconds, "recommend_users_100", collab.recommend_users, bpr, 100)
    print(
        orjson.dumps(
            {
                "sizes": sizes,
                "seconds": seconds,
                "epochs": args.epochs,
                "cpus": os.cpu_count(),
                "load_average": [round(value, 2) for value in os.getloadavg()],
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    main()
