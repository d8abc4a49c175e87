"""A/B assignment exactly as the course (spec 4), on current mmh3 (which wants an unsigned seed)."""
from __future__ import annotations

import mmh3

from .config import ExperimentConfig


def experiment_seed(experiment_name: str) -> int:
    """The course hashed the name with signed mmh3 3.0; as a seed that is the same 32 bits read unsigned."""
    return mmh3.hash(experiment_name, signed=False)


def assign_arm(experiment_name: str, arm_count: int, user: int) -> int:
    """Index of the user's arm: murmur3(str(user), seed=unsigned murmur3(name)) mod k, both unsigned."""
    return mmh3.hash(str(user), seed=experiment_seed(experiment_name), signed=False) % arm_count


class Experiment:
    """One running experiment: its arms' names and recommenders, and each user's arm."""

    def __init__(self, config: ExperimentConfig, recommenders: list):
        self.config = config
        self.name = config.name
        self.arm_names = tuple(arm.name for arm in config.arms)
        self.recommenders = tuple(recommenders)
        self._seed = experiment_seed(config.name)  # hashed once, not per request

    def arm_index(self, user: int) -> int:
        return mmh3.hash(str(user), seed=self._seed, signed=False) % len(self.arm_names)

    def describe(self, serving: bool) -> dict:
        return {"name": self.name, "serves_next": serving, "arms": [arm.describe() for arm in self.config.arms]}
