"""Stage `collect`: round 0 of the loop of days, the service serving the course's early recommenders to seeded
simulated traffic.

Its event log (with the later rounds', `loop@roundN`) is the training data for every model, as in the course:
models never see the simulator's world.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from botify_lab.pipeline import layout
from botify_lab.pipeline.experiment import Traffic, run_experiment
from botify_lab.pipeline.outputs import atomic_output_dir, write_json
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params, round_name
from botify_lab.pipeline.rounds import describe_round, round_summary
from botify_lab.research.catalog import read_catalog
from botify_lab.research.logs import read_log
from botify_lab.stages.pairs import save_round_pairs


def collect(params: Params, world_dir: Path = layout.WORLD, out_dir: Path = layout.COLLECT) -> Path:
    """Serve `collect.recommenders` (one arm each) to `collect.episodes` sessions; returns the log folder."""
    settings = params.collect
    experiment = {"name": settings.experiment, "arms": [{"recommender": name} for name in settings.recommenders]}
    # The scratch folder sits beside out_dir, so the config's relative paths hold once it is renamed.
    with atomic_output_dir(out_dir) as scratch:
        run_experiment(world_dir, [experiment], Traffic.from_params(settings, params), scratch)
        catalog = read_catalog(Path(world_dir) / "tracks.json")
        events = read_log(scratch / "log")
        summary = round_summary(round_name(0), params, events, catalog)
        write_json(scratch / layout.ROUND_SUMMARY, summary, sort_keys=True)
        save_round_pairs(events, scratch)
    return Path(out_dir) / "log"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    log = collect(load_params(parser.parse_args(argv).params))
    print(f"collect: {describe_round(log.parent)}")


if __name__ == "__main__":
    main()
