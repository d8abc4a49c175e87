"""Stage `fidelity`: does the world react like the course's real one to the recommenders its real logs record?

Per gamma (0.9 and 0.8, the course's artist_discount_gamma before and after 2022) a copy of the world's users with
`artist_discount_gamma` set is served, through the service (`run_experiment`, over `fidelity.transport`), an
experiment C = Random, T1 = StickyArtist, over several seeds at about the real logs' sizes. The event logs become
the statistics of the real logs (`botify_lab.research.fidelity`; the real ones measured from the course's logs are
committed as `research/real_logs_stats.json`), set beside the real ones with
the seed spread and a pass/fail per tolerance, together with StickyArtist at gamma 0.8 against the course's
published table and the TOP_POP experiment (in process, `botify_lab.inprocess.toppop`) against the published
TOP_POP table.
The training pairs' listen-time variance and baseline MSEs (the `pairs` stage's, from the rounds' logs) are set
beside the course's week-4 numbers.
The course's 2023 Contextual (`fidelity.course_contextual`, trained and exported by the pipeline) is served beside
Random and checked against the real Contextual-2023 arms, and the hidden embeddings' random-pair inner products are
set beside the course's described distribution.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from botify_lab.inprocess.world_checks import (
    GROUPS,
    STICKY_08,
    STICKY_08_RANGE,
    default_real_stats,
    fidelity_checks,
    group_name,
    load_real_stats,
    world_interests,
)
from botify_lab.pipeline import layout
from botify_lab.pipeline.experiment import Traffic, run_experiment
from botify_lab.pipeline.outputs import read_metrics
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params
from botify_lab.pipeline.reference import REFERENCE_LABEL, write_reference_recommendations
from botify_lab.research import fidelity as F
from botify_lab.research.catalog import read_catalog
from botify_lab.research.logs import read_log
from botify_lab.research.published import PUBLISHED_TABLE, arm_means, load_published
from botify_lab.stages.pairs import read_pairs
from sim.loader import load_world

EXPERIMENT = "FIDELITY"
ARMS = {"C": ("Random", "random"), "T1": ("StickyArtist", "sticky_artist")}
METRICS_FILE = layout.metrics_file("fidelity")
STATISTICS_FILE = layout.FIDELITY / "statistics.json"


def gamma_world(world_dir: Path, gamma: float, out_dir: Path) -> Path:
    """A world folder like `world_dir` whose every user has `artist_discount_gamma = gamma` (users.json rewritten,
    the catalog and embeddings linked or copied; no world.json, so nothing claims the generated world's hash)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tracks.json", "tracks.npy"):
        target = out_dir / name
        if target.exists():
            target.unlink()
        try:
            os.link(Path(world_dir) / name, target)
        except OSError:
            shutil.copyfile(Path(world_dir) / name, target)
    lines = []
    with open(Path(world_dir) / "users.json", "rb") as handle:
        for line in handle:
            if line.strip():
                row = orjson.loads(line)
                row["artist_discount_gamma"] = float(gamma)
                lines.append(orjson.dumps(row))
    (out_dir / "users.json").write_bytes(b"\n".join(lines) + b"\n")
    return out_dir


def served_beside_random(
    params: Params, world: Path, scratch: Path, recs: Path, experiment: str, *, episodes: int, seed: int | None = None
) -> pd.DataFrame:
    """The event log of experiment `experiment`: C Random vs T1 the Contextual recommender serving `recs`, on
    `world` (a gamma world), `episodes` sessions of the stage's traffic with `seed` (default: params.yaml's)."""
    arms = [{"recommender": "random"}, {"recommender": "contextual", "path": str(recs)}]
    traffic = Traffic.from_params(params.fidelity, params, seed=seed, episodes=episodes)
    run_dir = scratch / (f"run-{experiment.lower()}" if seed is None else f"run-{experiment.lower()}-{seed}")
    return read_log(run_experiment(world, [{"name": experiment, "arms": arms}], traffic, run_dir))


def reference_run(params: Params, world_08: Path, scratch: Path, recs: Path) -> dict:
    """C Random vs T1 the true-neighbour reference on the gamma-0.8 world, one seed: user-level means per arm."""
    from botify_lab.research import ab
    from botify_lab.research.logs import sessionize

    episodes = int(params.fidelity.reference_episodes)
    events = served_beside_random(params, world_08, scratch, recs, "REFERENCE", episodes=episodes)
    metrics = ab.user_metrics(sessionize(events), "REFERENCE")
    means = metrics.groupby("arm")[["mean_time_per_session", "mean_tracks_per_session"]].mean()
    labels = {"C": "Random", "T1": REFERENCE_LABEL}
    return {labels[arm]: {key: round(float(value), 4) for key, value in row.items()} for arm, row in means.iterrows()}


COURSE_CONTEXTUAL_GROUP = "Contextual-2023 gamma=0.8"
RANDOM_BESIDE_CONTEXTUAL_GROUP = "Random (beside Contextual) gamma=0.8"


def course_contextual_run(
    params: Params, world_08: Path, scratch: Path, recs: Path, artist: np.ndarray
) -> tuple[list, list]:
    """C Random vs T1 the course's Contextual (the model `fidelity.course_contextual` names, as exported) on the
    gamma-0.8 world over the seeds, as the real logs pooled as Contextual-2023 served it: per seed the statistics of
    each arm."""
    settings = params.fidelity
    if not Path(recs).is_file():
        raise FileNotFoundError(
            f"{recs} is missing: fidelity.course_contextual = {settings.course_contextual!r} must name a model "
            "of `models:` whose export ran (dvc repro runs it first)"
        )
    random_stats, contextual_stats = [], []
    for seed in (int(params.seed) + i for i in range(int(settings.seeds))):
        events = served_beside_random(
            params,
            world_08,
            scratch,
            recs,
            "COURSE_CONTEXTUAL",
            episodes=int(settings.contextual_episodes),
            seed=seed,
        )
        for arm, found in (("C", random_stats), ("T1", contextual_stats)):
            rows = F.playback_rows(events, "COURSE_CONTEXTUAL", arm, source=f"seed {seed}")
            found.append(F.statistics(rows, track_artist=artist, gamma=0.8))
    return random_stats, contextual_stats


@dataclass
class FidelityRun:
    checks: list  # F.Check
    simulated: dict  # group -> per-seed statistics
    real: dict  # stats.json
    top_pop: list  # per-seed arm means (DataFrames)
    training: dict | None
    reference: dict | None = None
    inner_products: np.ndarray | None = None  # random track pairs' inner products of the hidden embeddings

    @property
    def table(self) -> pd.DataFrame:
        return F.checks_table(self.checks)

    @property
    def passed(self) -> bool:
        return bool(self.table["passed"].all())


def simulate_groups(
    params: Params, worlds: dict[float, Path], scratch: Path, artist: np.ndarray, interests: pd.DataFrame
) -> dict[str, list[dict]]:
    """Serve C Random / T1 StickyArtist at each gamma (on `worlds[gamma]`, whose users have `interests`) over the
    seeds; per group the statistics of each seed."""
    settings = params.fidelity
    seeds = [int(params.seed) + i for i in range(int(settings.seeds))]
    found: dict[str, list[dict]] = {}
    experiment = {"name": EXPERIMENT, "arms": [{"recommender": recommender} for _, recommender in ARMS.values()]}
    for entry in settings.gammas:
        gamma, episodes = entry.gamma, entry.episodes
        world = worlds[gamma]
        for seed in seeds:
            traffic = Traffic.from_params(settings, params, seed=seed, episodes=episodes)
            log = run_experiment(world, [experiment], traffic, scratch / f"run-gamma-{gamma:g}-seed-{seed}")
            events = read_log(log)
            for arm, (kind, _) in ARMS.items():
                rows = F.playback_rows(events, EXPERIMENT, arm, source=f"seed {seed}")
                found.setdefault(group_name(kind, gamma), []).append(
                    F.statistics(rows, track_artist=artist, gamma=gamma, interests=interests)
                )
    return found


def top_pop(params: Params, world) -> list[pd.DataFrame]:
    """The published TOP_POP experiment replayed in process on `world` (a `sim.world.World`), per seed."""
    from botify_lab.inprocess.toppop import replicate_top_pop

    settings = params.fidelity
    seeds = [int(params.seed) + i for i in range(int(settings.top_pop_seeds))]
    episodes = int(settings.top_pop_episodes)
    return [arm_means(replicate_top_pop(world, seed, episodes=episodes, random_episodes=episodes)) for seed in seeds]


# The course's hidden embeddings (LightFM WARP factors; its tracks.npy is not public), as the spec describes them.
COURSE_INNER_PRODUCTS = {"range": [-12.0, 38.0], "bulk": [-5.0, 10.0], "share_negative": 0.55}
INNER_PRODUCT_PAIRS = 200_000


def inner_products(world_dir: Path, seed: int) -> np.ndarray:
    """Inner products of random track pairs (distinct tracks) of the world's hidden embeddings."""
    embeddings = np.load(Path(world_dir) / "tracks.npy").astype(np.float64)
    rng = np.random.default_rng([seed, len(embeddings)])
    first = rng.integers(0, len(embeddings), size=INNER_PRODUCT_PAIRS)
    second = (first + rng.integers(1, len(embeddings), size=INNER_PRODUCT_PAIRS)) % len(embeddings)
    return np.einsum("ij,ij->i", embeddings[first], embeddings[second])


def inner_product_summary(products: np.ndarray) -> dict:
    """Percentiles and the negative share of random pairs' inner products, beside the course's description."""
    percentiles = (1, 5, 25, 50, 75, 95, 99)
    values = np.percentile(products, percentiles)
    return {
        "pairs": len(products),
        "share_negative": round(float((products < 0).mean()), 4),
        "share_in_course_bulk": round(float(((products >= -5) & (products <= 10)).mean()), 4),
        "percentiles": {f"p{p}": round(float(v), 3) for p, v in zip(percentiles, values)},
        "min": round(float(products.min()), 3),
        "max": round(float(products.max()), 3),
        "course": COURSE_INNER_PRODUCTS,
    }


def training_summary(pairs_dir: Path, params: Params) -> dict | None:
    """Variance and baseline MSEs of the (first track, track, time) pairs every model trains on (the `pairs` stage's,
    from the rounds' logs), beside the course's; None where they were not made."""
    if not (Path(pairs_dir) / layout.PAIRS_FILE.name).exists():
        return None
    pairs = read_pairs(Path(pairs_dir)).pairs
    return F.training_data_summary(pairs["time"].to_numpy(), seed=int(params.seed), splits=params.train.splits)


def course_contextual_fit(params: Params) -> dict | None:
    """The test errors of the course's Contextual as trained on the rounds (metrics/train_<model>.json), if trained."""
    trained = read_metrics(f"train_{params.fidelity.course_contextual}")
    return trained["test"] if trained is not None else None


def run(
    params: Params,
    world_dir: Path = layout.WORLD,
    *,
    real_stats: Path | None = None,
    published: Path = PUBLISHED_TABLE,
    training_pairs_dir: Path = layout.PAIRS,
    course_contextual_recs: Path | None = None,
    reference_recs: Path | None = None,
) -> FidelityRun:
    """Every check of the stage; the course's Contextual serves `course_contextual_recs` (default: the exported
    lists of the model `fidelity.course_contextual` names), the true-neighbour reference `reference_recs` (default:
    computed here from `world_dir`; the stage passes the lists the stage `reference` wrote of the same world); the
    training data are the pairs in `training_pairs_dir` (default: those the models train on)."""
    settings = params.fidelity
    real = load_real_stats(real_stats or default_real_stats())
    reference = None
    with_reference = settings.reference_episodes > 0
    with_contextual = settings.contextual_episodes > 0
    artist = pd.factorize(read_catalog(Path(world_dir) / "tracks.json")["artist"])[0]
    world = load_world(world_dir, verify=False)  # its users' interests, and the in-process TOP_POP replay
    with tempfile.TemporaryDirectory(prefix="fidelity-") as folder:
        gammas = {entry.gamma for entry in settings.gammas}
        if with_reference or with_contextual:
            gammas.add(0.8)  # the reference and the course's Contextual run at the course's 2023 gamma
        worlds = {
            gamma: gamma_world(Path(world_dir), gamma, Path(folder) / f"world-gamma-{gamma:g}") for gamma in gammas
        }
        simulated = simulate_groups(params, worlds, Path(folder), artist, world_interests(world))
        if with_reference:
            recs = reference_recs or write_reference_recommendations(Path(world_dir), Path(folder) / "reference.json")
            reference = reference_run(params, worlds[0.8], Path(folder), recs)
        if with_contextual:
            recs = course_contextual_recs or layout.recs_file(settings.course_contextual)
            random_stats, contextual_stats = course_contextual_run(params, worlds[0.8], Path(folder), recs, artist)
            simulated[COURSE_CONTEXTUAL_GROUP] = contextual_stats
            simulated[RANDOM_BESIDE_CONTEXTUAL_GROUP] = random_stats
    means = top_pop(params, world)
    checks = fidelity_checks(real, simulated, means or None, load_published(published), settings.tolerances)
    if COURSE_CONTEXTUAL_GROUP in simulated:
        checks += F.course_contextual_checks(
            COURSE_CONTEXTUAL_GROUP,
            real["types"]["Contextual-2023"]["gamma=0.8"],
            simulated[RANDOM_BESIDE_CONTEXTUAL_GROUP],
            simulated[COURSE_CONTEXTUAL_GROUP],
        )
    training = training_summary(training_pairs_dir, params)
    fit = course_contextual_fit(params) if training is not None else None
    if fit is not None:
        checks += F.course_training_checks(training, fit)
    products = inner_products(Path(world_dir), int(params.seed))
    return FidelityRun(checks, simulated, real, means, training, reference, products)


def metrics_json(result: FidelityRun) -> dict:
    table = result.table
    return {
        "passed": result.passed,
        "failed": int((~table["passed"]).sum()),
        "checks": len(table),
        "worst": {
            "distance": round(float(table["distance"].max()), 4),
            "check": " | ".join(table.loc[table["distance"].idxmax(), ["group", "statistic"]]),
        },
        "table": [
            {key: (round(value, 4) if isinstance(value, float) else value) for key, value in row.items()}
            for row in table.to_dict(orient="records")
        ],
        "sticky_artist_gamma_0.8_published": {"anchor": STICKY_08, "range": STICKY_08_RANGE},
        "training_data": result.training,
        "reference_true_neighbours": result.reference,
        "hidden_inner_products": inner_product_summary(result.inner_products),
        "first_tracks_real_logs": F.real_first_tracks(),
        "interest_starts_real_logs": F.real_interest_starts(),
    }


def write_outputs(
    result: FidelityRun, metrics_path: Path = METRICS_FILE, statistics_path: Path = STATISTICS_FILE
) -> dict:
    """metrics/fidelity.json holds the verdict, the worst check, the training data and the reference; the table of
    every check (a column each in `dvc exp show` otherwise) goes beside the simulated statistics in build/fidelity."""
    metrics = metrics_json(result)
    headline = {key: value for key, value in metrics.items() if key != "table"}
    checks_path = Path(statistics_path).with_name("checks.json")
    for path, payload in (
        (metrics_path, headline),
        (statistics_path, result.simulated),
        (checks_path, metrics["table"]),
    ):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(
            orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
            + b"\n"
        )
    return metrics


# ---- figures ----------------------------------------------------------------------------------------------------


def fidelity_figure(result: FidelityRun, kind: str):
    """Real vs simulated for one recommender type: the listen-time histogram and the mean time by position."""
    import matplotlib.pyplot as plt

    groups = [(gamma, group_name(kind, gamma)) for k, gamma in GROUPS if k == kind]
    figure, axes = plt.subplots(len(groups), 2, figsize=(12, 3.6 * len(groups)), squeeze=False)
    labels = [label for label, *_ in F.HIST_BINS]
    x = np.arange(len(labels))
    for row, (gamma, name) in enumerate(groups):
        real = result.real["types"].get(kind, {}).get(f"gamma={gamma:g}")
        per_seed = result.simulated.get(name, [])
        hist = np.array([[s["listen_time_hist"][label] for label in labels] for s in per_seed])
        ax = axes[row, 0]
        if real is not None:
            ax.bar(x - 0.2, [real["listen_time_hist"][label] for label in labels], 0.4, label="real logs")
        ax.bar(x + 0.2, hist.mean(axis=0), 0.4, yerr=hist.std(axis=0), label="simulated (seed mean, sd)")
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{name}: listen time of recommended tracks")
        ax.legend(fontsize=8)
        ax = axes[row, 1]
        positions = list(range(2, 11))
        curve = np.array([[s["mean_time_at_position"][str(p)] for p in positions] for s in per_seed])
        if real is not None:
            ax.plot(positions, [real["mean_time_at_position"][str(p)] for p in positions], "o-", label="real logs")
        else:
            anchor = STICKY_08["mean_time_per_session"]
            ax.set_title(f"(published: {anchor} time per session)")
        ax.errorbar(positions, curve.mean(axis=0), yerr=curve.std(axis=0), fmt="s--", label="simulated")
        ax.set_xlabel("position in session")
        ax.set_ylabel("mean listen time")
        ax.set_title(f"{name}: mean time by position")
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def inner_product_figure(result: FidelityRun):
    """The world's random-pair inner products beside the course's described range, bulk and negative share."""
    import matplotlib.pyplot as plt

    products = result.inner_products
    course = COURSE_INNER_PRODUCTS
    low, high = np.percentile(products, [0.05, 99.95])
    figure, ax = plt.subplots(figsize=(10, 4))
    ax.hist(products, bins=np.linspace(min(low, course["range"][0]), max(high, course["range"][1]), 120), density=True)
    ax.axvspan(*course["bulk"], color="tab:orange", alpha=0.15, label="course: most pairs (-5 to +10)")
    for edge in course["range"]:
        ax.axvline(edge, color="tab:orange", linestyle="--")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.plot([], [], color="tab:orange", linestyle="--", label="course: about -12 to +38")
    ax.set_title(
        f"hidden embeddings, {len(products):,} random track pairs: {(products < 0).mean():.0%} negative "
        f"(course: about {course['share_negative']:.0%})"
    )
    ax.set_xlabel("inner product of two random tracks' hidden embeddings")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    parser.add_argument("--world", default=layout.WORLD, type=Path)
    args = parser.parse_args(argv)
    result = run(load_params(args.params), args.world)
    metrics = write_outputs(result)
    print(result.table[["group", "statistic", "real", "simulated", "seed_sd", "passed"]].to_string())
    print(f"\nfidelity: {metrics['checks'] - metrics['failed']}/{metrics['checks']} checks pass")


if __name__ == "__main__":
    main()
