"""The fidelity checks played in process: a world (from files or the generator's arrays) plays Random and
StickyArtist at artist_discount_gamma 0.9 and 0.8 and the TOP_POP experiment through the simulator's lock-step engine,
and the playbacks become the statistics of the course's real logs (`botify_lab.research.fidelity`), compared with the
real ones and the published tables. The `fidelity` stage reports them; `make world-search` scores candidate worlds
with them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from botify_lab.research import fidelity as F
from botify_lab.research.published import arm_means
from sim.loader import world_from_arrays

# The real logs' statistics: figures measured from the course's committed logs (which this project does not
# redistribute), kept with their provenance beside the research code; BOTIFY_LAB_REAL_STATS names another file.
COMMITTED_REAL_STATS = Path(F.__file__).with_name("real_logs_stats.json")


def default_real_stats() -> Path:
    return Path(os.environ.get("BOTIFY_LAB_REAL_STATS", COMMITTED_REAL_STATS))


REAL_STATS = default_real_stats()
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
    from botify_lab.inprocess.toppop import replicate_top_pop

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


# ---- what a model of the first track could learn -------------------------------------------------------------------


def first_track_candidates(world) -> np.ndarray:
    """Per flat (user, interest) pair, the tracks a session started from it draws its first track among: the
    interest's `interest_neighbours` nearest tracks, as the simulator's own lists hold them."""
    width = int(world.users.interest_neighbours.max())
    if (world.users.interest_neighbours != width).any():
        raise ValueError("every user must draw the first track among the same number of nearest tracks")
    return world.neighbour_lists(world.users.interests)[:, :width]


def first_track_ceiling(world, tracks: int = 3000, seed: int = 0) -> dict:
    """What a (first track, track) model, such as the course's Contextual, could learn in this world at best.

    The table E[listen | first track, track] is exact over the users: every (user, interest) pair equally likely and
    each of its `interest_neighbours` candidate first tracks too, for a random sample of `tracks` tracks; listen is
    the simulator's before the artist discount and rounding. Its share of the listen time's variance is the ceiling
    of any such model with unlimited data (the rest is each user's own bias and sharpness, which it never sees). The
    share of its first-track x track interaction held by its 1, 10, 50 and 100 largest singular directions says how
    much of that a logged million pairs can teach a low-dimensional model: over six worlds, the 2023 recipe's test
    MSE against the train mean's rose with the energy outside the first ten (README, the world against the real logs).
    """
    import scipy.sparse

    users = world.users
    candidates = first_track_candidates(world)
    width = candidates.shape[1]
    per_user = np.diff(users.interest_offsets)
    pair_user = np.repeat(np.arange(len(users)), per_user)
    pair_share = 1.0 / (len(users) * per_user[pair_user])  # a session's (user, interest) pair
    sample = np.random.default_rng(seed).choice(world.n_tracks, size=min(tracks, world.n_tracks), replace=False)
    scores = world.embeddings[users.interests] @ world.embeddings[sample].T
    bias, sharpness = users.consume_bias[pair_user, None], users.consume_sharpness[pair_user, None]
    listen = 1.0 / (1.0 + np.exp(-(scores - bias) * sharpness))  # (user, interest) pairs x sampled tracks
    mean = float(pair_share @ listen.mean(axis=1))
    variance = float(pair_share @ ((listen - mean) ** 2).mean(axis=1))
    first, slot = np.unique(candidates.ravel(), return_inverse=True)
    pairs = np.repeat(np.arange(len(candidates)), width)
    membership = scipy.sparse.csr_matrix(
        (np.repeat(pair_share / width, width), (slot, pairs)), shape=(len(first), len(candidates))
    )
    first_share = np.asarray(membership.sum(axis=1)).ravel()  # P(first track)
    table = (membership @ listen) / first_share[:, None]  # E[listen | first track, track]
    track_mean = first_share @ table
    interaction = table - track_mean[None, :] - (table.mean(axis=1) - mean)[:, None]
    energy = np.linalg.svd(interaction * np.sqrt(first_share)[:, None], compute_uv=False) ** 2
    cumulative = np.cumsum(energy) / energy.sum()
    return {
        "sampled_tracks": len(sample),
        "listen_variance": round(variance, 4),
        "ceiling_share_of_variance": round(float(first_share @ ((table - mean) ** 2).mean(axis=1)) / variance, 3),
        "track_alone_share_of_variance": round(float(((track_mean - mean) ** 2).mean()) / variance, 3),
        "interaction_energy_in_top_dims": {
            str(dims): round(float(cumulative[min(dims, len(cumulative)) - 1]), 3) for dims in (1, 10, 50, 100)
        },
    }
