"""A/B assignment exactly as the course (spec 4), on current mmh3 (which wants an unsigned seed)."""
from __future__ import annotations

import mmh3

from .config import ExperimentConfig


def assign_arm(experiment_name: str, arm_count: int, user: int) -> int:
    """Index of the user's arm: murmur3(str(user), seed=unsigned murmur3(name)) mod k, both unsigned."""
    seed = mmh3.hash(experiment_name, signed=False)
    return mmh3.hash(str(user), seed=seed, signed=False) % arm_count


class Experiment:
    """One running experiment: its arms' names and recommenders, and each user's arm."""

    def __init__(self, config: ExperimentConfig, recommenders: list):
        self.config = config
        self.name = config.name
        self.arm_names = tuple(arm.name for arm in config.arms)
        self.recommenders = tuple(recommenders)
        self._seed = mmh3.hash(config.name, signed=False)

    def arm_index(self, user: int) -> int:
        return mmh3.hash(str(user), seed=self._seed, signed=False) % len(self.arm_names)

    def describe(self, serving: bool) -> dict:
        return {"name": self.name, "serves_next": serving, "arms": [arm.describe() for arm in self.config.arms]}
