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
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import pandas as pd

from botify_lab.inprocess.world_checks import (
    GROUPS,
    evaluate_arrays,
    group_name,
    load_real_stats,
    summary_row,
)
from botify_lab.pipeline import layout
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params
from botify_lab.research.published import PUBLISHED_TABLE, load_published

SEARCH_TABLE = layout.WORLD_SEARCH_TABLE

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


def main(argv: list[str] | None = None) -> None:
    from sim.listening import LISTENING_KNOBS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    parser.add_argument("--published", default=PUBLISHED_TABLE, type=Path)
    parser.add_argument("--real-stats", default=None, type=Path)
    parser.add_argument("--out", default=SEARCH_TABLE, type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    base, search = search_base(params)
    table = search_worlds(base, search, load_real_stats(args.real_stats), load_published(args.published), out=args.out)
    best = best_candidate(table)
    print(table[["family", "failed", "worst", "worst_check", "score"]].to_string())
    columns = [*KNOB_COLUMNS, *LISTENING_KNOBS] if "listening" in base else KNOB_COLUMNS
    print(
        f"\nbest candidate: {best['family']} (failed {best['failed']}, worst check at {best['worst']} of its "
        f"tolerance): {best[[name for name in columns if name in best.index]].to_dict()}"
    )


if __name__ == "__main__":
    main()
