"""Figures of the A/B analysis that the notebooks and the command line share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from botify_lab.research.ab import LOWER_IS_BETTER, figure_colour


def effects_figure(effects: pd.DataFrame, *, alpha: float, title: str):
    """Each treatment's effect per metric (percent of control) with its Welch interval; green better, red worse."""
    import matplotlib.pyplot as plt

    shown = effects[~effects["metric"].isin(LOWER_IS_BETTER)].reset_index(drop=True)
    figure, axis = plt.subplots(figsize=(8, 0.6 * len(shown) + 1.5))
    colours = [figure_colour(row.effect, row.significant) for row in shown.itertuples()]
    positions = np.arange(len(shown))[::-1]
    for row, position, colour in zip(shown.itertuples(), positions, colours):
        axis.errorbar(
            row.effect,
            position,
            xerr=[[row.effect - row.lower], [row.upper - row.effect]],
            fmt="o",
            color=colour,
            elinewidth=2,
            capsize=4,
        )
    axis.axvline(0, color="black", linewidth=1)
    axis.set_yticks(positions, [f"{row.treatment}: {row.metric}" for row in shown.itertuples()])
    axis.set(xlabel=f"effect, % of control mean ({100 * (1 - alpha):.0f}% Welch interval)", title=title)
    figure.tight_layout()
    return figure
