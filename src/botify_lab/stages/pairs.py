"""Stage `pairs`: the contextual models' examples, read once from the rounds' logs for every `train@<model>`.

Every model of `models:` trains on the same (first track, track, time) pairs of the loop of days' logs (every round,
or the last `collect.window` of them), and reading 1.2 million log lines takes longer than training the seminar's
model. This stage reads them once into build/pairs/pairs.npz (plain arrays, no pickle) with build/pairs/pairs.json
(the rounds read, the events and pairs counted), so a model added to `models:` or changed retrains without reading a
log, and the fidelity stage's training-data checks read the same pairs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import atomic_output_dir, write_json
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params, training_rounds
from botify_lab.research.logs import read_logs, training_pairs

COLUMNS = {"user": np.int64, "context": np.int64, "track": np.int64, "time": np.float64}


@dataclass(frozen=True)
class Pairs:
    """The training pairs with where they came from."""

    rounds: list[str]
    events: int
    pairs: pd.DataFrame


def read_round_pairs(rounds: list[str]) -> Pairs:
    """The pairs of the given rounds' logs, read from the logs themselves."""
    events = read_logs([layout.round_log(name) for name in rounds])
    return Pairs(rounds, len(events), training_pairs(events))


def save_pairs(found: Pairs, directory: Path) -> Path:
    """`directory` (replaced) with the pairs' arrays and their record, written whole or not at all."""
    with atomic_output_dir(directory) as scratch:
        arrays = {name: found.pairs[name].to_numpy(dtype=dtype) for name, dtype in COLUMNS.items()}
        np.savez(scratch / layout.PAIRS_FILE.name, **arrays)
        record = {"rounds": found.rounds, "events": found.events, "pairs": len(found.pairs)}
        write_json(scratch / layout.PAIRS_RECORD.name, record)
    return Path(directory)


def write_pairs(params: Params) -> Pairs:
    """build/pairs: the pairs of the rounds every model trains on; returns what it wrote."""
    found = read_round_pairs(training_rounds(params))
    save_pairs(found, layout.PAIRS)
    return found


def read_pairs(directory: Path = layout.PAIRS) -> Pairs:
    """What `write_pairs` wrote; a clear error before the stage has run."""
    directory = Path(directory)
    arrays_path, record_path = directory / layout.PAIRS_FILE.name, directory / layout.PAIRS_RECORD.name
    if not arrays_path.exists() or not record_path.exists():
        raise FileNotFoundError(f"no training pairs in {directory}: run `dvc repro pairs` first")
    record = orjson.loads(record_path.read_bytes())
    with np.load(arrays_path, allow_pickle=False) as arrays:
        pairs = pd.DataFrame({name: arrays[name].astype(dtype, copy=False) for name, dtype in COLUMNS.items()})
    if len(pairs) != record["pairs"]:
        raise ValueError(f"{arrays_path} holds {len(pairs)} pairs, {record_path} says {record['pairs']}")
    return Pairs(record["rounds"], record["events"], pairs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    found = write_pairs(params)
    print(f"pairs: {len(found.pairs):,} training pairs from {found.events:,} events of {', '.join(found.rounds)}")


if __name__ == "__main__":
    main()
