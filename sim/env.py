"""The simulated user as a gymnasium environment: the agent recommends, the user listens (spec section 2).

Observation: the user, the last track and its listen time. Action: a catalog track id. Reward: the listen time.
The episode ends (terminated) when the user's budget is spent. Each reset draws a fresh episode key from the
environment's seeded generator, so `reset(seed=s)` replays the same sessions for the same actions.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sim.rng import MASK64
from sim.user import Session
from sim.world import World, load_world


class ListeningEnv(gym.Env):
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, world: World | str, render_mode: str | None = None):
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
        super().reset(seed=seed)
        key = int(self.np_random.integers(0, MASK64, dtype=np.uint64, endpoint=True))
        self.session = Session(self.world, key)
        return self._observation(), self._info()

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
