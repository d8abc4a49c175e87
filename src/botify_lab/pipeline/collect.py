"""Stage `collect`: the service serves the course's early recommenders to seeded simulated traffic.

Its event log is the training data for every model, as in the course: models never see the simulator's world.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from botify_lab.pipeline import layout
from botify_lab.pipeline.experiment import Traffic, run_experiment
from botify_lab.pipeline.outputs import atomic_output_dir
from botify_lab.pipeline.params import load_params


def collect(params: dict, world_dir: Path = layout.WORLD, out_dir: Path = layout.COLLECT) -> Path:
    """Serve `collect.recommenders` (one arm each) to `collect.episodes` sessions; returns the log folder."""
    settings = params["collect"]
    experiment = {"name": settings["experiment"], "arms": [{"recommender": name} for name in settings["recommenders"]]}
    # The scratch folder sits beside out_dir, so the config's relative paths hold once it is renamed.
    with atomic_output_dir(out_dir) as scratch:
        run_experiment(world_dir, [experiment], Traffic.from_params(settings, params), scratch)
    return Path(out_dir) / "log"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", type=Path)
    log = collect(load_params(parser.parse_args(argv).params))
    print(f"collect: event log in {log}")


if __name__ == "__main__":
    main()
