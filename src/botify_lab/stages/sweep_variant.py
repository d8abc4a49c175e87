"""Stage `sweep_variant@<variant>`: one variant of the sweep trained, exported, measured offline and A/B tested.

The variant is params.yaml's `sweep.base` model with one point of `sweep.grid` (DVC's matrix names the stage after
it); botify_lab.stages.sweep says what is measured and how the `sweep` stage puts the variants together.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from botify_lab.pipeline import layout
from botify_lab.pipeline.experiment import Traffic, run_experiment
from botify_lab.pipeline.outputs import atomic_output_dir, show_progress, write_json
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params
from botify_lab.pipeline.sweep import VARIANT_RECORD, Variant, rounded
from botify_lab.research import ab
from botify_lab.research.catalog import read_catalog
from botify_lab.research.choices import LOSSES, SWEEP_SIMILARITIES
from botify_lab.research.export import coverage, same_artist_share, top_k_neighbours, write_track_recommendations
from botify_lab.research.logs import read_log, sessionize
from botify_lab.research.model import TrainingSettings, train_contextual
from botify_lab.stages.pairs import read_pairs

ONLINE_METRICS = ("mean_time_per_session", "mean_tracks_per_session")


def variant_settings(variant: Variant, params: Params) -> TrainingSettings:
    """How a variant is fitted: the grid's values, the base model's other settings, `train:` and the seed."""
    base, train = params.models[params.sweep.base], params.train
    return TrainingSettings(
        embedding_dim=variant.embedding_dim,
        similarity=variant.model_similarity,
        loss=variant.loss,
        mlp_hidden=base.mlp_hidden,
        mlp_sigmoid=variant.similarity == "mlp_sigmoid",
        optimizer=base.optimizer,
        init_std=train.init_std,
        lr=variant.lr,
        weight_decay=train.weight_decay,
        batch_size=train.batch_size,
        max_epochs=train.max_epochs,
        plateau_patience=train.plateau_patience,
        early_stopping_patience=train.early_stopping_patience,
        splits=tuple(train.splits),
        seed=params.seed,
    )


def ranking_metrics(
    neighbours: np.ndarray, context: np.ndarray, track: np.ndarray, time: np.ndarray, k: int, relevant_time: float
) -> dict:
    """Hit rate@k and NDCG@k of the pairs whose listen time is at least `relevant_time`: is the listened track among
    the first k exported neighbours of the session's first track, and how high (one relevant track per pair, so the
    ideal DCG is 1)."""
    relevant = np.asarray(time) >= relevant_time
    lists = np.asarray(neighbours)[np.asarray(context)[relevant], :k]
    found = lists == np.asarray(track)[relevant, None]
    hit = found.any(axis=1)
    gain = np.where(hit, 1.0 / np.log2(found.argmax(axis=1) + 2.0), 0.0)
    count = int(relevant.sum())
    return {
        "relevant_pairs": count,
        "hit_rate": round(float(hit.mean()), 6) if count else None,
        "ndcg": round(float(gain.mean()), 6) if count else None,
    }


def online_effects(log_dir: Path, experiment: str, params: Params) -> dict:
    """The course's A/B table for the variant's test (T1 against C), per online metric, with the sample-ratio check."""
    metrics = ab.user_metrics(sessionize(read_log(log_dir)), experiment)
    effects = ab.ab_effects(
        metrics, alpha=float(params.ab.alpha), metric_names=ONLINE_METRICS, power=float(params.ab.power)
    )
    srm = ab.srm_check(metrics["arm"].value_counts(), alpha=float(params.ab.srm_alpha))
    totals = ab.arm_totals(metrics).set_index("arm")
    online = {
        "arms": {arm: {"users": int(row.users), "sessions": int(row.sessions)} for arm, row in totals.iterrows()},
        "srm": {"p_value": round(srm["p_value"], 6), "mismatch": srm["mismatch"]},
    }
    for row in effects.itertuples():
        online[row.metric] = {
            name: rounded(getattr(row, name))
            for name in ("control_mean", "treatment_mean", "effect", "lower", "upper", "p_value", "mde")
        }
    return online


def run_variant(name: str, variant: Variant, params: Params) -> dict:
    """Train, export, measure and A/B test one variant; build/sweep/<name> receives its record and lists."""
    sweep, progress = params.sweep, show_progress()
    base = params.models[sweep.base]
    catalog = read_catalog(layout.CATALOG)
    found = read_pairs()
    print(f"sweep {name}: training {variant.label} on {len(found.pairs):,} pairs", flush=True)
    result = train_contextual(found.pairs, len(catalog), variant_settings(variant, params), progress=progress)
    neighbours = top_k_neighbours(result.model, base.neighbours, exclude_self=base.exclude_self, progress=progress)
    test = found.pairs.iloc[result.test_index]
    ranking = ranking_metrics(
        neighbours,
        test["context"].to_numpy(),
        test["track"].to_numpy(),
        test["time"].to_numpy(),
        sweep.k,
        sweep.relevant_time,
    )
    errors = {key: round(value, 6) for key, value in result.test.items()}
    offline = {
        "test": errors,
        "mse_vs_train_mean": round(errors["model_mse"] / errors["train_mean_mse"], 6),
        **ranking,
        "coverage_share": round(coverage(neighbours) / len(catalog), 6),
        "same_artist_share": round(same_artist_share(neighbours, catalog["artist"].to_numpy()), 6),
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
    }
    with atomic_output_dir(layout.sweep_dir(name)) as scratch:
        recs = write_track_recommendations(layout.CATALOG, neighbours, scratch / "recs.json")
        arms = [
            {"name": "C", "recommender": "contextual", "path": str(layout.recs_file(sweep.control))},
            {"name": "T1", "recommender": "contextual", "path": str(recs)},
        ]
        experiment = {"name": sweep.experiment, "arms": arms}
        print(f"sweep {name}: serving it against {sweep.control} ({sweep.episodes:,} sessions a day)", flush=True)
        log = run_experiment(layout.WORLD, [experiment], Traffic.from_params(sweep, params), scratch / "ab")
        online = online_effects(log, sweep.experiment, params)
        shutil.rmtree(log)
        record = {
            "variant": name,
            "label": variant.label,
            "params": {**asdict(variant), "base": sweep.base, "control": sweep.control},
            "offline": offline,
            "online": online,
            # rounded as every training record is: full floats differ in the last digits across processors
            "history": result.metrics()["history"],
        }
        write_json(scratch / VARIANT_RECORD, record)
    time = online["mean_time_per_session"]
    print(
        f"sweep {name}: test MSE {errors['model_mse']:.4f} (train mean {errors['train_mean_mse']:.4f}), "
        f"hit rate@{sweep.k} {ranking['hit_rate']}, time per session vs {sweep.control} "
        f"{time['effect']:+.1f}% [{time['lower']:+.1f}, {time['upper']:+.1f}]"
    )
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="its folder under build/sweep (DVC's name for it)")
    parser.add_argument("--embedding-dim", type=int, required=True)
    parser.add_argument("--similarity", required=True, choices=SWEEP_SIMILARITIES)
    parser.add_argument("--loss", required=True, choices=LOSSES)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    args = parser.parse_args(argv)
    variant = Variant(args.embedding_dim, args.similarity, args.loss, args.lr)
    run_variant(args.name, variant, load_params(args.params))


if __name__ == "__main__":
    main()
