"""`make world-search`: search the world generator's knobs for a world that reacts to every recommender of the course's
real logs as the real world did.

Each candidate world is built in memory (`sim.generator.world_arrays`, the params.yaml `world:` section with some
knobs replaced) and played in process by the simulator's lock-step engine: Random and StickyArtist at
artist_discount_gamma 0.9 and 0.8, and the TOP_POP experiment; the playbacks become the same statistics as
`../shared/real-logs/stats.json` (`botify_lab.research.fidelity`) and are compared with the real ones and the
published tables. A candidate's score is its worst check in units of its tolerance (<= 1: every check passes).
Every candidate lands in `metrics/fidelity_search.csv` with its knobs, its key statistics and its score. With
`world.source: listening` the candidates are `fidelity_search.listening`'s (the listening source's knobs), each
LightFM fit reused across values of `scale`.

Playing in process checks only what needs no training; the course's 2023 Contextual and the training data need the
loop of days and a fit. `--complete N` (`make world-choose`) therefore runs the search's survivors (every in-process
check passed; the N best) through the pipeline itself, one after another: each in a clone of HEAD whose params.yaml
carries the candidate's knobs, `make world`'s command, then `dvc repro fidelity` (about 6 minutes a candidate on 2
cores). Their `metrics/fidelity.json` choose: fewest failed checks, then the smallest worst distance
(`metrics/fidelity_search_complete.csv`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from botify_lab.inprocess.world_checks import (
    GROUPS,
    evaluate_arrays,
    group_name,
    load_real_stats,
    summary_row,
)
from botify_lab.pipeline import layout
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params
from botify_lab.pipeline.scheduler import dvc_environment
from botify_lab.pipeline.world import REPO_ROOT
from botify_lab.research.published import PUBLISHED_TABLE, load_published

SEARCH_TABLE = layout.WORLD_SEARCH_TABLE
CHOICE_TABLE = layout.WORLD_CHOICE_TABLE

# ---- the search ---------------------------------------------------------------------------------------------------


def candidates(search: dict) -> list[tuple[str, dict]]:
    """(family, knob overrides): the base world, one-knob sweeps, then the grid; no repeats."""
    found: list[tuple[str, dict]] = [("base", {})]
    for label, overrides in (search.get("points") or {}).items():
        found.append((f"point {label}", dict(overrides)))
    for knob, values in (search.get("sweeps") or {}).items():
        found += [(f"sweep {knob}", {knob: value}) for value in values]
    grid = search.get("grid") or {}
    for values in itertools.product(*grid.values()):
        found.append(("grid " + " x ".join(grid), dict(zip(grid, values))))
    unique, seen = [], set()
    for family, overrides in found:
        key = tuple(sorted(overrides.items()))
        if key not in seen:
            seen.add(key)
            unique.append((family, overrides))
    return unique


def search_worlds(
    base: dict, search: dict, real: dict, published: pd.DataFrame, *, out: Path | None = None, log=print
) -> pd.DataFrame:
    """One row per candidate (knobs, key statistics, failed checks, worst distance, score); written as it goes."""
    seeds = range(int(search.get("seeds", 2)))
    episodes = {group_name(kind, gamma): int(search.get("episodes", 3000)) for kind, gamma in GROUPS}
    rows = []
    build = candidate_builder(base)
    for family, overrides in candidates(search):
        started = time.perf_counter()
        arrays = build(overrides)
        checks, _ = evaluate_arrays(
            arrays,
            real,
            published,
            seeds=seeds,
            episodes=episodes,
            top_pop_seeds=range(int(search.get("top_pop_seeds", 2))),
            top_pop_episodes=int(search.get("top_pop_episodes", 3700)),
        )
        row = {
            "family": family,
            **{k: v for k, v in flat_knobs(base).items() if k not in ("n_tracks", "n_users")},
            **overrides,
            "artists": len(arrays["sizes"]),
            **summary_row(checks),
            "seconds": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        log(
            f"{family} {overrides}: failed {row['failed']} worst {row['worst']} ({row['worst_check']}) "
            f"score {row['score']} [{row['seconds']}s]"
        )
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(out, index=False)
    return pd.DataFrame(rows)


def flat_knobs(base: dict) -> dict:
    """The base world's knobs in one level (a listening base nests its shared and listening knobs)."""
    if "listening" not in base:
        return dict(base)
    return {"seed": base["seed"], **base["shared"], **base["listening"]}


def candidate_builder(base: dict):
    """overrides -> the candidate world's arrays. A listening base refits LightFM only when a knob other than
    `scale` changes (the factors are kept per fit, and `scale` only multiplies them)."""
    if "listening" not in base:
        from sim.generator import world_arrays

        return lambda overrides: world_arrays(**{**base, **overrides})
    from sim.listening import listening_world_arrays

    fits: dict[tuple, dict] = {}

    def build(overrides: dict) -> dict:
        listening = {**base["listening"], **overrides}
        key = tuple(sorted((k, v) for k, v in listening.items() if k != "scale"))
        if key not in fits:
            fits[key] = listening_world_arrays(**{**base, "listening": {**listening, "scale": 1.0}})
        fitted = fits[key]
        return {**fitted, "embeddings": (fitted["embeddings"] * float(listening["scale"])).astype("float32")}

    return build


def search_base(params: Params) -> tuple[dict, dict]:
    """The search's base world and candidates for params.yaml's world source (`fidelity_search.listening` holds the
    listening source's candidates)."""
    from sim.listening import SHARED_KNOBS
    from sim.settings import generator_arguments

    search, world = params.fidelity_search.model_dump(), params.world.model_dump()
    arguments = generator_arguments(world)
    if world["source"] != "listening":
        return arguments, search
    if not search["listening"]:
        raise ValueError("world.source is listening: fidelity_search.listening must list its candidates")
    base = {
        "seed": arguments["seed"],
        "n_tracks": arguments["n_tracks"],
        "n_users": arguments["n_users"],
        "shared": {name: arguments[name] for name in SHARED_KNOBS},
        "listening": world["listening"],
    }
    return base, {**search, **search["listening"]}


KNOB_COLUMNS = (
    "dim",
    "genres",
    "styles_per_genre",
    "artist_size_mu",
    "artist_size_sigma",
    "artist_size_max",
    "genre_zipf",
    "genre_spread",
    "style_spread",
    "artist_spread",
    "track_spread",
    "artist_popularity_sigma",
    "track_popularity_sigma",
    "popularity_alignment",
    "popularity_offset",
    "interests",
    "interest_popularity_exponent",
)


def best_candidate(table: pd.DataFrame) -> pd.Series:
    """Fewest failed checks, then the smallest worst distance (the first of equals)."""
    return table.sort_values(["failed", "worst"], kind="stable").iloc[0]


# ---- complete runs: the search's survivors through the pipeline ------------------------------------------------


def survivors(table: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The candidates that passed every in-process check, the smallest worst distance first, at most `limit`."""
    return table[table["failed"] == 0].sort_values("worst", kind="stable").head(limit)


def candidate_world(world: dict, row: pd.Series) -> dict:
    """params.yaml's `world:` section with a search row's knobs (the listening knobs under `listening:` when that is
    the source), each kept to the type params.yaml gives it (the table stores integers as floats)."""
    from sim.settings import LISTENING_KNOBS

    section = {**world, "listening": dict(world.get("listening") or {})}
    target, names = (
        (section["listening"], LISTENING_KNOBS) if world["source"] == "listening" else (section, KNOB_COLUMNS)
    )
    for name in names:
        if name in row.index and not pd.isna(row[name]):
            current = target.get(name)
            target[name] = type(current)(row[name]) if isinstance(current, int | float) else row[name]
    return section


def complete_run(family: str, world: dict, clone: Path, log=print) -> dict:
    """The pipeline's fidelity stage, and what it reads, on a candidate world in a fresh clone of this repository's
    HEAD: `make world`'s command, then `dvc repro fidelity`. The clone's output goes to `clone.log` beside it."""
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    params_path = clone / PARAMS_FILE
    params = yaml.safe_load(params_path.read_text())
    params["world"] = world
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    environment = {
        **dvc_environment(),
        "PYTHONPATH": os.pathsep.join([str(clone), str(clone / "src")]),
        "DVC_SITE_CACHE_DIR": str(clone.parent / "dvc-site-cache"),
    }
    output = clone.with_suffix(".log")
    started = time.perf_counter()
    with output.open("wb") as handle:
        for command in (["world"], ["repro", "fidelity"]):
            arguments = [sys.executable, "-m", "botify_lab.pipeline.bootstrap", *command]
            done = subprocess.run(arguments, cwd=clone, env=environment, stdout=handle, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                tail = "\n".join(output.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"{family}: `bootstrap {' '.join(command)}` failed in {clone}:\n{tail}")
    fidelity = json.loads((clone / layout.metrics_file("fidelity")).read_text())
    checks = json.loads((clone / layout.FIDELITY / "checks.json").read_text())
    failing = [f"{check['group']} | {check['statistic']}" for check in checks if not check["passed"]]
    row = {
        "family": family,
        "passed": fidelity["checks"] - fidelity["failed"],
        "failed": fidelity["failed"],
        "worst": fidelity["worst"]["distance"],
        "worst_check": fidelity["worst"]["check"],
        "failing": "; ".join(failing),
        **{
            f"{check['group']} | {check['statistic']}": check["simulated"]
            for check in checks
            if check["group"] in ("Contextual-2023 gamma=0.8", "Training data (week 4)")
        },
        "seconds": round(time.perf_counter() - started),
    }
    log(
        f"{family}: {row['passed']} of {fidelity['checks']} checks pass, worst {row['worst_check']} at "
        f"{row['worst']} of its tolerance [{row['seconds']} s]"
    )
    return row


def choose_worlds(table: pd.DataFrame, world: dict, limit: int, work: Path, *, out: Path | None = None, log=print):
    """Complete runs of the search's survivors (see `complete_run`), one row each, best first."""
    chosen = survivors(table, limit)
    if chosen.empty:
        raise ValueError("no candidate of the search passed every in-process check: nothing to run completely")
    log(f"running {len(chosen)} candidate(s) through the pipeline, each in its own clone under {work}")
    rows = []
    for _, row in chosen.iterrows():
        slug = re.sub(r"[^a-z0-9]+", "-", f"{row['family']} {row.get('scale', '')}".lower()).strip("-")
        log(f"{row['family']}: `make world`, then `dvc repro fidelity` in {work / slug} (its output: {slug}.log)")
        candidate = candidate_world(world, row)
        knobs = candidate["listening"] if candidate["source"] == "listening" else candidate
        run = complete_run(row["family"], candidate, work / slug, log)
        rows.append({**run, **{name: knobs[name] for name in knobs if name in row.index}})
        ranked = pd.DataFrame(rows).sort_values(["failed", "worst"], kind="stable")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            ranked.to_csv(out, index=False)
    return ranked


def main(argv: list[str] | None = None) -> None:
    from sim.listening import LISTENING_KNOBS

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    parser.add_argument("--published", default=PUBLISHED_TABLE, type=Path)
    parser.add_argument("--real-stats", default=None, type=Path)
    parser.add_argument("--out", default=SEARCH_TABLE, type=Path, help="the search's table (default: %(default)s)")
    parser.add_argument(
        "--from-table", action="store_true", help="skip the in-process search: read its table (--out) as it stands"
    )
    parser.add_argument(
        "--complete", type=int, default=0, metavar="N", help="then run the N best survivors through the pipeline"
    )
    parser.add_argument("--complete-out", default=CHOICE_TABLE, type=Path, help="their table (default: %(default)s)")
    parser.add_argument("--keep", type=Path, help="keep the complete runs' clones and logs in this new folder")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    base, search = search_base(params)
    if args.from_table:
        if not args.out.exists():
            parser.error(f"--from-table: no search table at {args.out}; run `make world-search` first")
        table = pd.read_csv(args.out)
    else:
        real, published = load_real_stats(args.real_stats), load_published(args.published)
        table = search_worlds(base, search, real, published, out=args.out)
    best = best_candidate(table)
    print(table[["family", "failed", "worst", "worst_check", "score"]].to_string())
    columns = [*KNOB_COLUMNS, *LISTENING_KNOBS] if "listening" in base else KNOB_COLUMNS
    print(
        f"\nbest candidate in process: {best['family']} (failed {best['failed']}, worst check at {best['worst']} of "
        f"its tolerance): {best[[name for name in columns if name in best.index]].to_dict()}"
    )
    if args.complete <= 0:
        return
    world = params.world.model_dump()
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        choice = choose_worlds(table, world, args.complete, args.keep.resolve(), out=args.complete_out)
    else:
        with tempfile.TemporaryDirectory(prefix="world-choose-") as work:
            choice = choose_worlds(table, world, args.complete, Path(work), out=args.complete_out)
    print(choice.to_string(index=False))
    print(f"\nchosen by complete runs: {choice.iloc[0]['family']} ({args.complete_out})")


if __name__ == "__main__":
    main()
