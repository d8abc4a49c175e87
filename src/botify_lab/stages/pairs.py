"""Stage `pairs`: the contextual models' examples, gathered once from the rounds for every `train@<model>`.

Every model of `models:` trains on the same (first track, track, time) pairs of the loop of days' logs (every round,
or the last `collect.window` of them). Each round reads its own log once, as it ends (`save_round_pairs`: pairs.npz
and pairs.json beside its log), since parsing a round's 400,000 log lines takes 1.3 to 1.9 s and every later round
read them all again. This stage joins the rounds' pairs into build/pairs/pairs.npz (plain arrays, no pickle) with
build/pairs/pairs.json (the rounds read, the events and pairs counted), so a model added to `models:` or changed
retrains without reading a log, and the fidelity stage's training-data checks read the same pairs.
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
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params, round_name, training_rounds
from botify_lab.research.logs import open_sessions, training_pairs

COLUMNS = {"user": np.int64, "context": np.int64, "track": np.int64, "time": np.float64}


@dataclass(frozen=True)
class Pairs:
    """The training pairs with where they came from."""

    rounds: list[str]
    events: int
    pairs: pd.DataFrame


def _write_arrays(directory: Path, pairs: pd.DataFrame, record: dict) -> None:
    arrays = {name: pairs[name].to_numpy(dtype=dtype) for name, dtype in COLUMNS.items()}
    np.savez(directory / layout.PAIRS_FILE.name, **arrays)
    write_json(directory / layout.PAIRS_RECORD.name, record)


def _read_arrays(directory: Path, missing_hint: str) -> tuple[dict, pd.DataFrame]:
    """(record, pairs) of a folder `_write_arrays` wrote; a clear error naming `missing_hint` when it did not."""
    arrays_path, record_path = directory / layout.PAIRS_FILE.name, directory / layout.PAIRS_RECORD.name
    if not arrays_path.exists() or not record_path.exists():
        raise FileNotFoundError(f"no training pairs in {directory}: {missing_hint}")
    record = orjson.loads(record_path.read_bytes())
    with np.load(arrays_path, allow_pickle=False) as arrays:
        pairs = pd.DataFrame({name: arrays[name].astype(dtype, copy=False) for name, dtype in COLUMNS.items()})
    if len(pairs) != record["pairs"]:
        raise ValueError(f"{arrays_path} holds {len(pairs)} pairs, {record_path} says {record['pairs']}")
    return record, pairs


def round_stage(name: str) -> str:
    """The stage that writes round `name`'s folder."""
    return "collect" if name == round_name(0) else f"loop@{name}"


def save_round_pairs(events: pd.DataFrame, round_dir: Path) -> None:
    """A round's own pairs beside its log, from the events it logged (`read_log` of the round's log)."""
    pairs = training_pairs(events)
    record = {"events": len(events), "open_sessions": open_sessions(events), "pairs": len(pairs)}
    _write_arrays(round_dir, pairs, record)


def read_round_pairs(rounds: list[str]) -> Pairs:
    """The pairs of the given rounds (in the loop's order), as `training_pairs` gives their logs read as one.

    Each round's pairs are per user in time order and the rounds follow each other on one clock, so a stable sort by
    user of the rounds' pairs, one after another, is that order; a session a round's log left open would have
    continued into the next round's first one, so such a round cannot be joined to a later one."""
    found = [_read_arrays(layout.round_dir(name), f"run `dvc repro {round_stage(name)}` first") for name in rounds]
    for name, (record, _) in zip(rounds[:-1], found[:-1]):
        if record["open_sessions"]:
            raise ValueError(
                f"{name}'s log leaves {record['open_sessions']} sessions open, which its next round's first sessions "
                "would continue: its pairs cannot be joined to a later round's"
            )
    joined = pd.concat([pairs for _, pairs in found], ignore_index=True)
    by_user = np.argsort(joined["user"].to_numpy(), kind="stable")
    return Pairs(rounds, sum(record["events"] for record, _ in found), joined.iloc[by_user].reset_index(drop=True))


def save_pairs(found: Pairs, directory: Path) -> Path:
    """`directory` (replaced) with the pairs' arrays and their record, written whole or not at all."""
    with atomic_output_dir(directory) as scratch:
        _write_arrays(scratch, found.pairs, {"rounds": found.rounds, "events": found.events, "pairs": len(found.pairs)})
    return Path(directory)


def write_pairs(params: Params) -> Pairs:
    """build/pairs: the pairs of the rounds every model trains on; returns what it wrote."""
    found = read_round_pairs(training_rounds(params))
    save_pairs(found, layout.PAIRS)
    return found


def read_pairs(directory: Path = layout.PAIRS) -> Pairs:
    """What `write_pairs` wrote; a clear error before the stage has run."""
    record, pairs = _read_arrays(Path(directory), "run `dvc repro pairs` first")
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
