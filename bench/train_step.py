"""LazyAdam's compiled training step, per batch, on one thread and on several; prints one JSON object.

Runs the same batches of the default training pairs (after `make repro`) through `LazyAdam.train_pairs` once per
thread count, each from the same fresh tables, and reports milliseconds per step and whether every count left the
same bits. Run it alone and again beside another process to see what threads gain on shared cores:

    .venv/bin/python bench/train_step.py [--model ours] [--batches 300] [--threads 1 2]
"""

from __future__ import annotations

# First: importing the package pins the numeric kernels and sets OpenMP's wait policy, which act only if set before
# numpy, numba and torch load.
import botify_lab  # noqa: F401

# isort: split
import argparse
import hashlib
import os
import time
from pathlib import Path

import numba
import numpy as np
import orjson
import torch

from botify_lab.pipeline.params import load_params
from botify_lab.research.lazy_adam import LazyAdam, compiled_threads
from botify_lab.research.model import _compiled_step, _pair_tensors
from botify_lab.stages.pairs import read_pairs
from botify_lab.stages.train import training_settings

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def run_steps(batches: list[torch.Tensor], pairs: tuple, n_tracks: int, settings, seed: int) -> tuple[float, str]:
    """Seconds per step over `batches` (the training's own compiled step) and a digest of both tables after them."""
    generator = torch.Generator().manual_seed(seed)
    tables = [
        torch.nn.Parameter(torch.randn(n_tracks, settings.embedding_dim, generator=generator) * settings.init_std)
        for _ in range(2)
    ]
    optimizer = LazyAdam(tables, lr=settings.lr, weight_decay=settings.weight_decay)
    step = _compiled_step(optimizer, pairs, settings.similarity, settings.loss)
    step(batches[0])  # compiles, if needed
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    seconds = (time.perf_counter() - start) / (len(batches) - 1)
    digest = hashlib.sha256(b"".join(table.detach().numpy().tobytes() for table in tables)).hexdigest()
    return seconds, digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ours", help="a model of params.yaml `models:` (default: ours)")
    parser.add_argument("--batches", type=int, default=300, help="batches of train.batch_size pairs (default: 300)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, numba.config.NUMBA_NUM_THREADS])
    args = parser.parse_args()
    params = load_params(PARAMS)
    settings = training_settings(args.model, params)
    if settings.similarity not in ("dot", "cosine") or settings.optimizer != "lazy_adam":
        raise SystemExit(f"{args.model} does not train through the compiled step (a dot or cosine model on lazy_adam)")
    pairs = _pair_tensors(read_pairs().pairs, params.world.tracks)
    order = torch.as_tensor(np.random.default_rng(params.seed).permutation(len(pairs[0])))
    size = settings.batch_size
    batches = [order[start : start + size] for start in range(0, min(len(order), size * args.batches), size)]
    load_before, runs = os.getloadavg(), {}
    for threads in args.threads:
        with compiled_threads(threads):
            seconds, digest = run_steps(batches, pairs, params.world.tracks, settings, params.seed)
        runs[str(threads)] = {"ms_per_step": round(seconds * 1e3, 2), "tables_sha256": digest}
    print(
        orjson.dumps(
            {
                "benchmark": "train_step",
                "model": args.model,
                "similarity": settings.similarity,
                "embedding_dim": settings.embedding_dim,
                "batch_size": size,
                "steps": len(batches) - 1,
                "load_average_before": [round(value, 2) for value in load_before],
                "threads": runs,
                "same_bits": len({run["tables_sha256"] for run in runs.values()}) == 1,
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    main()
