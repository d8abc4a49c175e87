"""Stage `collect`: the service serves the course's early recommenders to seeded simulated traffic.

Its event log is the training data for every model, as in the course: models never see the simulator's world.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from botify_lab.pipeline.outputs import atomic_output_dir
from botify_lab.pipeline.params import load_params
from botify_lab.pipeline.service_run import serve_and_simulate, write_service_config


def collect(world_dir: Path, out_dir: Path, params: dict) -> dict:
    settings = params["collect"]
    # The scratch folder sits beside out_dir, so the config's relative paths hold once it is renamed.
    with atomic_output_dir(out_dir) as scratch:
        config = write_service_config(
            scratch / "service.yaml",
            catalog=Path(world_dir) / "tracks.json",
            log_dir=scratch / "log",
            seed=params["seed"],
            experiments=[{"name": settings["experiment"], "arms": [{"recommender": name} for name in settings["recommenders"]]}],
        )
        summary = serve_and_simulate(
            world_dir, config, episodes=settings["episodes"], seed=params["seed"], days=settings["days"],
            processes=settings["processes"], summary_path=scratch / "summary.json",
        )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--world", default="data", type=Path, help="world folder the simulator plays (default: data)")
    parser.add_argument("--out", default="build/collect", type=Path, help="output folder: service.yaml, log/, summary.json")
    args = parser.parse_args(argv)
    collect(args.world, args.out, load_params(args.params))


if __name__ == "__main__":
    main()
