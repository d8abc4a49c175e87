"""Stage `simulate`: the homework A/B test, served by the real service over HTTP to seeded simulated traffic.

Control C serves the Contextual recommender on `simulate.control`'s export, treatment T1 on `simulate.treatment`'s
(notebooks/simulate.ipynb). The service's event log is the result, analysed by the `analyze` stage.
"""

from __future__ import annotations

from pathlib import Path

from botify_lab.pipeline import layout
from botify_lab.pipeline.experiment import Traffic, run_experiment, serving_arm
from botify_lab.pipeline.outputs import atomic_output_dir
from botify_lab.pipeline.params import Params


def homework_experiment(params: Params) -> dict:
    settings = params.simulate
    arms = [serving_arm(params, name) for name in (settings.control, settings.treatment)]
    return {"name": settings.experiment, "arms": arms}


def arm_labels(params: Params) -> dict[str, str]:
    """C and T1 named after the models they serve, for tables and figures."""
    settings = params.simulate
    return {"C": f"C ({settings.control})", "T1": f"T1 ({settings.treatment})"}


def simulate_homework(params: Params) -> Path:
    """Run the experiment; returns the log folder (build/simulate/log)."""
    with atomic_output_dir(layout.SIMULATE) as scratch:
        run_experiment(
            layout.WORLD, [homework_experiment(params)], Traffic.from_params(params.simulate, params), scratch
        )
    return layout.SIMULATE_LOG
