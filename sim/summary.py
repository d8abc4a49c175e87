"""A run's statistics (per day and in total) and the table `python -m sim run` prints."""

from __future__ import annotations

import numpy as np

from sim.episodes import Outcomes


def mean_and_sem(values: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and standard error, the latter as scipy.stats.sem computes it (ddof=1) without its 46 MB import."""
    if len(values) == 0:
        return None, None
    sem = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
    return float(np.mean(values)), sem


def summarize(label: dict, outcomes: Outcomes) -> dict:
    """`label` plus episode count, total steps, reward and steps per episode (mean and sem) and invalid answers."""
    reward_mean, reward_sem = mean_and_sem(outcomes.rewards)
    steps_mean, steps_sem = mean_and_sem(outcomes.steps)
    return {
        **label,
        "episodes": int(len(outcomes.episodes)),
        "steps": int(outcomes.steps.sum()),
        "reward_mean": reward_mean,
        "reward_sem": reward_sem,
        "steps_mean": steps_mean,
        "steps_sem": steps_sem,
        "invalid_answers": int(outcomes.invalid.sum()),
    }


def format_summary(summary: dict) -> str:
    """The per-day table the course printed, plus throughput and invalid answers."""
    header = f"{'day':>4} {'episodes':>9} {'reward':>8} {'± sem':>7} {'steps':>7} {'± sem':>7} {'invalid':>8}"

    def number(value, width):
        return f"{value:>{width}.3f}" if value is not None else f"{'-':>{width}}"

    rows = [header]
    for row in summary["per_day"] + [dict(summary["total"], day="all")]:
        rows.append(
            f"{row['day']:>4} {row['episodes']:>9} {number(row['reward_mean'], 8)} {number(row['reward_sem'], 7)} "
            f"{number(row['steps_mean'], 7)} {number(row['steps_sem'], 7)} {row['invalid_answers']:>8}"
        )
    speed = summary["steps_per_second"]
    rows.append(f"steps/second: {speed:,.0f}" if speed else "steps/second: -")
    rows.append(f"invalid answers: {summary['invalid_answers']}")
    return "\n".join(rows)
