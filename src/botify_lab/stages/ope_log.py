"""Stage `ope_log`: the held-out logging day that off-policy evaluation reads, served apart from the evaluation.

The collection's recommenders (Random, StickyArtist; one arm each, experiment `ope.experiment`) serve
`ope.episodes` sessions on the day after the loop's last round, a day no model trained on; each "next" line carries
the probability its arm drew the recommendation. The log depends on the world, the collection's recommenders, the
loop's length and the seed only, so a stage of its own keeps it cached when a model or the estimators change (the
`ope` stage then reweighs the same log in seconds). Written as build/ope/log.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from botify_lab.pipeline import layout
from botify_lab.pipeline.experiment import Traffic, run_experiment
from botify_lab.pipeline.outputs import atomic_output_dir
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params, round_first_day, round_names


def logging_day(params: Params) -> int:
    """The day after the loop of days' last round: no model has seen its traffic."""
    return round_first_day(params, round_names(params)[-1]) + int(params.collect.days)


def logging_experiment(params: Params) -> dict:
    """The held-out day's experiment: the collection's recommenders, one arm each (C, T1, ...)."""
    return {
        "name": params.ope.experiment,
        "arms": [{"recommender": name} for name in params.collect.recommenders],
    }


def serve_logging_day(params: Params) -> Path:
    """build/ope/log: the logging experiment served on the held-out day."""
    traffic = dataclasses.replace(Traffic.from_params(params.ope, params), first_day=logging_day(params))
    print(f"ope: serving {', '.join(params.collect.recommenders)} on day {traffic.first_day}", flush=True)
    with atomic_output_dir(layout.OPE) as scratch:
        run_experiment(layout.WORLD, [logging_experiment(params)], traffic, scratch)
    return layout.OPE_LOG


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    serve_logging_day(load_params(parser.parse_args(argv).params))


if __name__ == "__main__":
    main()
