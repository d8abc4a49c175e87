"""Stage `indexed`: the Indexed recommender's per-user lists from a collaborative model of the collected log.

The course trained LightFM on positive interactions (listen time above `indexed.positive_time`) and served each
user's top tracks; here the collaborative model of `botify_lab.research.collab` plays that part.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import atomic_output_dir, write_json
from botify_lab.pipeline.params import load_params
from botify_lab.research.catalog import read_catalog
from botify_lab.research.collab import positive_interactions, recommend_users, train_bpr, write_user_recommendations
from botify_lab.research.logs import read_log


def train_indexed(log_dir: Path, catalog_path: Path, out_dir: Path, settings: dict, seed: int) -> dict:
    """Train the collaborative model on the log's positives and write `user_recs.json` and `train.json`."""
    events = read_log(log_dir)
    interactions = positive_interactions(events, float(settings["positive_time"]))
    n_tracks = len(read_catalog(catalog_path))
    model = train_bpr(interactions, n_tracks, factors=int(settings["factors"]), epochs=int(settings["epochs"]),
                      lr=float(settings["lr"]), regularization=float(settings["regularization"]),
                      batch_size=int(settings["batch_size"]), seed=seed, progress=False)
    recommendations = recommend_users(model, int(settings["top"]))
    write_user_recommendations(recommendations, Path(out_dir) / "user_recs.json")
    report = {
        "positive_pairs": int(len(interactions)),
        "users": int(len(model.users)),
        "tracks_per_user": int(settings["top"]),
        "final_loss": round(model.history[-1]["loss"], 6),
        "history": [{"epoch": row["epoch"], "loss": round(row["loss"], 6)} for row in model.history],
    }
    write_json(Path(out_dir) / "train.json", report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", type=Path)
    params = load_params(parser.parse_args(argv).params)
    with atomic_output_dir(layout.INDEXED) as scratch:
        report = train_indexed(layout.COLLECT_LOG, layout.CATALOG, scratch, params["indexed"], int(params["seed"]))
    print(f"indexed: {report['users']} users, {report['positive_pairs']} positive pairs, "
          f"final BPR loss {report['final_loss']}")


if __name__ == "__main__":
    main()
