"""`make calibrate`: search the world generator's knobs for a world that reacts to every recommender of the course's
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
import json
import os
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.params import PARAMS_FILE, load_params
from botify_lab.research import fidelity as F
from botify_lab.research.published import PUBLISHED_TABLE, arm_means, load_published
from sim.loader import world_from_arrays

# The real logs' statistics: figures measured from the course's committed logs (which this project does not
# redistribute), kept with their provenance beside the research code; BOTIFY_LAB_REAL_STATS names another file.
COMMITTED_REAL_STATS = Path(F.__file__).with_name("real_logs_stats.json")


def default_real_stats() -> Path:
    return Path(os.environ.get("BOTIFY_LAB_REAL_STATS", COMMITTED_REAL_STATS))


REAL_STATS = default_real_stats()
SEARCH_TABLE = layout.WORLD_SEARCH_TABLE
# StickyArtist at gamma 0.8, the course's published tables (no raw log of it is public): range and 2023 anchor.
STICKY_08 = {"mean_time_per_session": 3.138, "mean_tracks_per_session": 8.137}
STICKY_08_RANGE = {"mean_time_per_session": (3.07, 3.26), "mean_tracks_per_session": (7.92, 8.40)}
GROUPS = (("Random", 0.9), ("Random", 0.8), ("StickyArtist", 0.9), ("StickyArtist", 0.8))


def group_name(kind: str, gamma: float) -> str:
    return f"{kind} gamma={gamma:g}"


def load_real_stats(path: Path | str | None = None) -> dict:
    path = Path(default_real_stats() if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(
            f"the real logs' statistics are not at {path} (BOTIFY_LAB_REAL_STATS names the file; "
            f"unset, the committed {COMMITTED_REAL_STATS.name} is used)"
        )
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# ---- the world in memory ----------------------------------------------------------------------------------------


class StickyArtistBatch:
    """The course's StickyArtist in process: a random track by the artist of the last track."""

    def __init__(self, track_artist: np.ndarray):
        track_artist = np.asarray(track_artist, dtype=np.int64)
        self.track_artist = track_artist
        self.order = np.argsort(track_artist, kind="stable")
        counts = np.bincount(track_artist)
        self.offsets = np.r_[0, np.cumsum(counts)]
        self.counts = counts

    def recommend_batch(self, users, tracks, times, keys: np.ndarray, steps: np.ndarray) -> np.ndarray:
        from sim import rng

        artists = self.track_artist[np.asarray(tracks, dtype=np.int64)]
        picks = rng.integer_array(keys, rng.AGENT, steps, self.counts[artists])
        return self.order[self.offsets[artists] + picks]


def play_rows(world, agent, seed: int, episodes: int) -> pd.DataFrame:
    """One row per playback (as `fidelity.playback_rows` reads them from a log) of `episodes` sessions."""
    from sim.lockstep import run_lockstep

    result = run_lockstep(world, agent, seed, 0, np.arange(episodes), trace=True)
    plays = [orjson.loads(line) for chunk in result.trace for line in chunk.splitlines()]
    return pd.DataFrame(
        {
            "source": f"seed {seed}",
            "user": np.fromiter((p["user"] for p in plays), dtype=np.int64, count=len(plays)),
            "session": np.fromiter((p["episode"] for p in plays), dtype=np.int64, count=len(plays)),
            "position": np.fromiter((p["step"] + 1 for p in plays), dtype=np.int64, count=len(plays)),
            "track": np.fromiter((p["track"] for p in plays), dtype=np.int64, count=len(plays)),
            "time": np.fromiter((p["time"] for p in plays), dtype=np.float64, count=len(plays)),
        }
    )


def world_interests(world) -> pd.DataFrame:
    """The (user, track) pairs of a `sim.world.World`'s users' interests (`F.interest_pairs`)."""
    users = world.users
    return F.interest_pairs(users.ids, np.split(users.interests, users.interest_offsets[1:-1]))


def simulated_statistics(world, seeds, episodes: dict[str, int]) -> dict[str, list[dict]]:
    """Per group ("Random gamma=0.9", ...) the statistics of each seed's sessions."""
    from sim.agents import RandomRecommender

    sticky = StickyArtistBatch(world.track_artist)
    interests = world_interests(world)
    found: dict[str, list[dict]] = {}
    for kind, gamma in GROUPS:
        name = group_name(kind, gamma)
        twin = world.with_gamma(gamma)
        agent = RandomRecommender(world.n_tracks) if kind == "Random" else sticky
        found[name] = []
        for seed in seeds:
            rows = play_rows(twin, agent, 1000 * int(seed) + len(found), int(episodes.get(name, 2000)))
            found[name].append(F.statistics(rows, track_artist=world.track_artist, gamma=gamma, interests=interests))
    return found


def top_pop_means(world, seeds, episodes: int = 3700) -> list[pd.DataFrame]:
    from botify_lab.pipeline.top_pop_in_process import replicate_top_pop

    return [
        arm_means(replicate_top_pop(world, int(seed), episodes=episodes, random_episodes=episodes)) for seed in seeds
    ]


def fidelity_checks(
    real: dict,
    simulated: dict[str, list[dict]],
    top_pop: list[pd.DataFrame] | None,
    published: pd.DataFrame | None,
    tolerances: dict | None = None,
) -> list[F.Check]:
    """Every check of the issue: the four groups against stats.json / the published StickyArtist table, their
    sessions' first tracks against the real logs', and the TOP_POP arms against the published table."""
    checks: list[F.Check] = []
    types = real["types"]
    for kind, gamma in GROUPS:
        name = group_name(kind, gamma)
        if name not in simulated:
            continue
        entry = types.get(kind, {}).get(f"gamma={gamma:g}")
        if entry is not None:
            checks += F.stats_checks(name, entry, simulated[name], tolerances, saturation=kind == "StickyArtist")
        elif kind == "StickyArtist":
            values = {metric: [s[f"{metric}_user_level"] for s in simulated[name]] for metric in STICKY_08}
            checks += F.mean_checks(name + " (published)", STICKY_08, values, tolerances, STICKY_08_RANGE)
    groups = [group_name(kind, gamma) for kind, gamma in GROUPS if group_name(kind, gamma) in simulated]
    if groups:
        every_arm = [stats for name in groups for stats in simulated[name]]
        checks.append(F.first_tracks_check(every_arm))
        if all(key in stats for stats in every_arm for key in F.INTEREST_STARTS):
            checks += F.interest_starts_checks(every_arm)
    if top_pop is not None and published is not None:
        for row in published.itertuples(index=False):
            if row.metric not in ("mean_time_per_session", "mean_tracks_per_session"):
                continue
            values = [float(means.loc[row.arm, row.metric]) for means in top_pop]
            checks += F.mean_checks(
                f"TOP_POP {row.arm} {row.recommender}", {row.metric: row.mean}, {row.metric: values}, tolerances
            )
    return checks


def evaluate_arrays(
    arrays: dict,
    real: dict,
    published: pd.DataFrame,
    *,
    seeds=(0, 1),
    episodes: dict | None = None,
    top_pop_seeds=(0, 1),
    top_pop_episodes: int = 3700,
    tolerances: dict | None = None,
):
    world = world_from_arrays(arrays)
    episodes = episodes or {}
    simulated = simulated_statistics(world, seeds, episodes)
    top_pop = top_pop_means(world, top_pop_seeds, top_pop_episodes) if top_pop_seeds else None
    return fidelity_checks(real, simulated, top_pop, published, tolerances), simulated


def summary_row(checks: list[F.Check]) -> dict:
    """Key simulated values, the number of failed checks and the worst distance (in tolerances)."""
    table = F.checks_table(checks)
    row = {}
    for check in checks:
        if check.statistic in (
            "mean_time_per_session",
            "mean_tracks_per_session",
            "saturation_share",
            "hist 0",
            "hist (0,0.1]",
            "hist 1.0",
            "mean_time_at_position 2",
            "mean_time_at_position 6",
            "session_length p90",
        ):
            row[f"{check.group} | {check.statistic}"] = round(check.mean, 4)
    row["failed"] = int((~table["passed"]).sum())
    row["worst"] = round(float(table["distance"].max()), 3)
    row["worst_check"] = " | ".join(table.loc[table["distance"].idxmax(), ["group", "statistic"]])
    row["score"] = round(float(np.sqrt((np.minimum(table["distance"], 5) ** 2).mean())), 4)
    return row


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


def search_base(params: dict) -> tuple[dict, dict]:
    """The search's base world and candidates for params.yaml's world source (`fidelity_search.listening` holds the
    listening source's candidates)."""
    from sim.listening import SHARED_KNOBS
    from sim.settings import generator_arguments

    search = params["fidelity_search"]
    arguments = generator_arguments(params["world"])
    if params["world"].get("source") != "listening":
        return arguments, search
    if not search.get("listening"):
        raise ValueError("world.source is listening: fidelity_search.listening must list its candidates")
    base = {
        "seed": arguments["seed"],
        "n_tracks": arguments["n_tracks"],
        "n_users": arguments["n_users"],
        "shared": {name: arguments[name] for name in SHARED_KNOBS},
        "listening": dict(params["world"]["listening"]),
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
    parser.add_argument("--no-check", action="store_true", help="skip params.yaml's schema check")
    args = parser.parse_args(argv)
    params = load_params(args.params, check=not args.no_check)
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
