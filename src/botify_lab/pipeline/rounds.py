"""What each round of the loop of days leaves beside its log: round.json (what was served and how the traffic went),
written by `collect` (round 0) and `loop@roundN`, read by `feedback`; the round's training pairs (`stages.pairs`)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd

from botify_lab.formats import arm_name
from botify_lab.pipeline import layout
from botify_lab.pipeline.params import Params, round_first_day, round_number
from botify_lab.research.feedback import served_summary


def round_summary(
    round_name: str, params: Params, events: pd.DataFrame, catalog: pd.DataFrame, served: dict | None = None
):
    """round.json: the round, its first day, the served traffic per arm (named by what it served) and overall (from
    the round's logged `events`), and the fit of the model it served (`served`; round 0 serves none)."""
    settings = params.collect
    number = round_number(round_name)
    traffic = served_summary(events, catalog["artist"].to_numpy(), settings.experiment)
    if served is None:  # round 0's arms carry the course's names C, T1, ...: name them by their recommender
        labels = {arm_name(position): name for position, name in enumerate(settings.recommenders)}
        traffic["arms"] = {labels[arm]: numbers for arm, numbers in traffic["arms"].items()}
    return {
        "round": round_name,
        "number": number,
        "first_day": round_first_day(params, round_name),
        "exploration": float(settings.exploration) if served else 0.0,
        "model": served,
        **traffic,
    }


def read_round_summary(round_dir: Path) -> dict:
    return orjson.loads((Path(round_dir) / layout.ROUND_SUMMARY).read_bytes())


def describe_round(round_dir: Path) -> str:
    """One line for the terminal: each arm's time per session and the catalog share it served."""
    summary = read_round_summary(round_dir)
    arms = "; ".join(
        f"{arm} {numbers['mean_time_per_session']:.3f} time per session, served {numbers['coverage_share']:.1%} of "
        "the catalog"
        for arm, numbers in summary["arms"].items()
    )
    return f"{arms} (log in {Path(round_dir) / 'log'})"
