"""Training time and test error of the default models with dense Adam and lazy Adam; prints one JSON object.

Trains every model of params.yaml's `models:` with its exact `train:` settings and seed on the pairs the train
stage reads (the logs of every round of the loop of days, after `make repro`), once per optimizer, and reports
seconds, epochs, the best epoch, test MSE and the relative test-MSE difference of lazy against dense:

    .venv/bin/python bench/train_speed.py [--logs build/rounds/round0/log ...] [--threads 1] [--kernel-threads 1]
        [--models ours] [--optimizers lazy_adam]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import orjson
import torch

from botify_lab.pipeline import layout
from botify_lab.pipeline.params import load_params, training_rounds
from botify_lab.research.logs import read_logs, training_pairs
from botify_lab.research.model import OPTIMIZERS, train_contextual
from botify_lab.stages.train import training_settings

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=Path, nargs="+", help="event log folders (default: every round's, as `train`)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: train_contextual's)")
    parser.add_argument(
        "--kernel-threads", type=int, default=None, help="LazyAdam's compiled steps' threads (default: every core)"
    )
    parser.add_argument("--models", nargs="+", default=None, help="models of params.yaml (default: all)")
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    args = parser.parse_args()
    params = load_params(PARAMS)
    logs = args.logs or [layout.round_log(round_) for round_ in training_rounds(params)]
    for log in logs:
        if not log.is_dir() or not any(log.iterdir()):
            sys.exit(f"no collected log at {log}: run `make repro` first or pass --logs PATH ...")
    n_tracks = params.world.tracks
    start = time.perf_counter()
    pairs = training_pairs(read_logs(logs))
    read_seconds = round(time.perf_counter() - start, 3)
    threads = {} if args.threads is None else {"num_threads": args.threads}
    threads["kernel_threads"] = args.kernel_threads
    models: dict = {}
    for name in args.models or list(params.models):
        runs = {}
        for optimizer in args.optimizers:
            settings = dataclasses.replace(training_settings(name, params), optimizer=optimizer)
            start = time.perf_counter()
            result = train_contextual(pairs, n_tracks, settings, **threads, progress=False)
            seconds = time.perf_counter() - start
            runs[optimizer] = {
                "seconds": round(seconds, 2),
                "epochs": len(result.history),
                "seconds_per_epoch": round(seconds / len(result.history), 3),
                "best_epoch": result.best_epoch,
                "test_model_mse": round(result.test["model_mse"], 6),
                "test_train_mean_mse": round(result.test["train_mean_mse"], 6),
            }
        if {"adam", "lazy_adam"} <= set(runs):
            dense, lazy = runs["adam"]["test_model_mse"], runs["lazy_adam"]["test_model_mse"]
            runs["lazy_vs_dense_mse"] = round((lazy - dense) / dense, 4)
            runs["speedup"] = round(runs["adam"]["seconds"] / runs["lazy_adam"]["seconds"], 2)
        models[name] = runs
    print(
        orjson.dumps(
            {
                "logs": [str(log) for log in logs],
                "pairs": len(pairs),
                "n_tracks": n_tracks,
                "read_seconds": read_seconds,
                "threads": args.threads or "default",
                "kernel_threads": args.kernel_threads or "default",
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "load_average": [round(value, 2) for value in os.getloadavg()],
                "models": models,
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    main()
