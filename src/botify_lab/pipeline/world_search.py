"""`make calibrate`: search the world generator's knobs for a world that reacts to TOP_POP as the course's did.

Each candidate world is generated (the params.yaml `world:` section with some knobs replaced) and the TOP_POP
replication runs in process over several seeds (`top_pop_in_process`); the candidate's score is its worst
calibrated cell, |simulated / published - 1| / tolerance, so a score <= 1 with the published ordering means every
arm is within tolerance. Candidates are the previous defaults, one-knob sweeps around the chosen world (how each
knob moves the table), and a grid over the knobs that matter most. Every candidate lands in one table
(`metrics/calibration_search.csv`), which the `calibrate` notebook shows as the reason for the defaults.
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from botify_lab.formats import atomic_write_bytes
from botify_lab.pipeline import layout
from botify_lab.pipeline.params import load_params
from botify_lab.pipeline.top_pop_in_process import evaluate_world
from botify_lab.pipeline.world import world_arguments
from botify_lab.research.published import PUBLISHED_TABLE, load_published


def candidates(search: dict) -> list[tuple[str, dict]]:
    """(family, knob overrides) in a fixed order: previous defaults, one-knob sweeps, then the grid; no repeats."""
    found: list[tuple[str, dict]] = [("previous defaults", dict(search.get("previous", {})))]
    for knob, values in search.get("sweeps", {}).items():
        found += [(f"sweep {knob}", {knob: value}) for value in values]
    grid = search.get("grid", {})
    for values in itertools.product(*grid.values()):
        found.append(("grid " + " x ".join(grid), dict(zip(grid, values))))
    unique, seen = [], set()
    for family, overrides in found:
        key = tuple(sorted(overrides.items()))
        if key not in seen:
            seen.add(key)
            unique.append((family, overrides))
    return unique


def search_worlds(params: dict, published: pd.DataFrame, *, progress: bool = True) -> pd.DataFrame:
    """One row per candidate: its knobs, the seed-averaged cells, ordering, worst score and whether it is calibrated."""
    from sim.generator import generate_world
    from sim.loader import load_world

    search = params["calibrate_search"]
    tolerances = {metric: float(value) for metric, value in params["calibrate"]["tolerances"].items()}
    base = world_arguments(params)
    seeds = range(int(search["seeds"]))
    rows = []
    for family, overrides in tqdm(candidates(search), desc="worlds", disable=not progress):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="calibrate-") as folder:
            generate_world(folder, **{**base, **overrides})
            world = load_world(folder, verify=False)
            verdict = evaluate_world(world, published, seeds, tolerances=tolerances, episodes=int(search["episodes"]),
                                     random_episodes=int(search["random_episodes"]))
        row = {"family": family, **{knob: base.get(knob) for knob in _knob_names(search)}, **overrides}
        cells = verdict.table[verdict.table["tolerance"].notna()]
        for cell in cells.itertuples(index=False):
            row[f"{cell.arm} {cell.metric}"] = round(cell.simulated, 4)
        row.update(ordered=verdict.ordered, worst=round(verdict.worst, 4), calibrated=verdict.calibrated,
                   seconds=round(time.perf_counter() - started, 2))
        rows.append(row)
    return pd.DataFrame(rows)


def _knob_names(search: dict) -> list[str]:
    names = list(search.get("previous", {}))
    for group in ("sweeps", "grid"):
        names += [name for name in search.get(group, {}) if name not in names]
    return names


def best_candidate(table: pd.DataFrame) -> pd.Series:
    """The calibrated candidate with the smallest worst score (the first of equals); an error when none is."""
    calibrated = table[table["calibrated"]]
    if calibrated.empty:
        raise RuntimeError("no candidate world lands every TOP_POP arm within tolerance; widen the search")
    return calibrated.loc[calibrated["worst"].idxmin()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--published", default=PUBLISHED_TABLE, type=Path)
    parser.add_argument("--out", default=layout.WORLD_SEARCH_TABLE, type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    table = search_worlds(params, load_published(args.published))
    atomic_write_bytes(args.out, table.to_csv(index=False).encode())
    best = best_candidate(table)
    knobs = {name: best[name].item() if hasattr(best[name], "item") else best[name] for name in _knob_names(params["calibrate_search"])}
    current = {name: world_arguments(params)[name] for name in knobs}
    print(table.to_string(index=False))
    print(f"\nbest world knobs (worst cell at {best['worst']:.2f} of its tolerance): {knobs}")
    if knobs != current:
        print(f"params.yaml world: has {current}; set the best knobs there, then `make world` and commit data.dvc")


if __name__ == "__main__":
    main()
