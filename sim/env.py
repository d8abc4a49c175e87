"""The simulated user as a gymnasium environment: the agent recommends, the user listens.

Observation: the user (row in users.json), the last track and its listen time. Action: a catalog track id.
Reward: the listen time. The episode ends (terminated) when the user's budget is spent.

The environment plays the same episodes as `sim.run.simulate` with the same traffic seed: the n-th `reset()` after
construction (or after `reset(seed=s)`, which switches to traffic seed s) plays episode n of day 0 under the key
`sim.rng.episode_key(seed, 0, n)`. An agent that answers as it would in `simulate` therefore gets the same rewards;
`info["key"]` at reset is the episode's key, which `RandomRecommender.start_session` takes.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sim import rng
from sim.loader import load_world
from sim.user import Session
from sim.world import World


class ListeningEnv(gym.Env):
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, world: World | str | os.PathLike, seed: int = 0, render_mode: str | None = None):
        self.world = world if isinstance(world, World) else load_world(world)
        self.render_mode = render_mode
        self.observation_space = spaces.Dict(
            {
                "user": spaces.Discrete(self.world.n_users),
                "track": spaces.Discrete(self.world.n_tracks),
                "time": spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32),
            }
        )
        self.action_space = spaces.Discrete(self.world.n_tracks)
        rng.episode_key(seed, 0, 0)  # validates the seed
        self.traffic_seed = seed
        self.next_episode = 0
        self.session: Session | None = None

    def _observation(self) -> dict:
        return {
            "user": self.session.user_index,
            "track": self.session.last_track,
            "time": np.array([self.session.last_time], dtype=np.float32),
        }

    def _info(self) -> dict:
        return {"user_id": self.session.user, "budget_left": self.session.budget, "step": self.session.step}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start the next episode; `seed` switches to that traffic seed and starts again from its episode 0."""
        super().reset(seed=seed)
        if seed is not None:
            rng.episode_key(seed, 0, 0)
            self.traffic_seed, self.next_episode = seed, 0
        episode = self.next_episode
        self.next_episode += 1
        self.session = Session(self.world, rng.episode_key(self.traffic_seed, 0, episode))
        return self._observation(), {**self._info(), "episode": episode, "key": self.session.key}

    def step(self, action):
        if self.session is None or self.session.done:
            raise RuntimeError("call reset() before step() and after the episode ends")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not a track id in 0..{self.world.n_tracks - 1}")
        reward = self.session.listen(int(action))
        return self._observation(), reward, self.session.done, False, self._info()

    def render(self):
        if self.render_mode == "ansi" and self.session is not None:
            return (
                f"user {self.session.user} heard [{self.world.describe_track(self.session.last_track)}] "
                f"for {self.session.last_time:.2f}; budget {self.session.budget}"
            )
        return None


def make_env(world: World | str | os.PathLike, seed: int, render_mode: str | None = None) -> ListeningEnv:
    """The environment whose n-th reset plays episode n of day 0 of `simulate(world, seed=seed)`."""
    return ListeningEnv(world, seed, render_mode)
