"""A/B assignment as the course did it, through the project's shared definition (`botify_lab.formats`)."""

from __future__ import annotations

from pathlib import Path

from botify_lab.formats import assign_arm, experiment_seed

from .config import ExperimentConfig

__all__ = ["Experiment", "assign_arm", "experiment_seed"]


class Experiment:
    """One running experiment: its arms' names and recommenders, and each user's arm."""

    def __init__(self, config: ExperimentConfig, recommenders: list):
        self.config = config
        self.name = config.name
        self.arm_names = tuple(arm.name for arm in config.arms)
        self.recommenders = tuple(recommenders)
        self._seed = experiment_seed(config.name)  # hashed once, not per request

    def arm_index(self, user: int) -> int:
        return assign_arm(self.name, len(self.arm_names), user, seed=self._seed)

    def describe(self, serving: bool, base_dir: Path | None = None) -> dict:
        """The experiment for GET /experiments; data paths relative to `base_dir` when given."""
        return {"name": self.name, "serves_next": serving, "arms": [arm.describe(base_dir) for arm in self.config.arms]}
