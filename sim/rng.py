"""Counter-based randomness: every draw is a pure function of (seed, day, episode, stream, step).

A stateful generator would make an episode's draws depend on which worker ran it and in what order. Hashing the
coordinates of a draw instead makes the traffic identical for any process count or concurrency, and lets the
vectorized engine compute the draws of thousands of episodes at once with the very same numbers as the scalar path.
The mixer is SplitMix64's finalizer; the scalar (Python int) and vectorized (numpy uint64) versions are tested equal.
"""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_OFFSET = 0x632BE59BD9B4E019
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB

# Independent streams of one episode.
USER, INTEREST, FIRST_TRACK, BUDGET, AGENT = range(5)


def mix64(value: int) -> int:
    value &= MASK64
    value = ((value ^ (value >> 30)) * _MIX1) & MASK64
    value = ((value ^ (value >> 27)) * _MIX2) & MASK64
    return value ^ (value >> 31)


def absorb(state: int, value: int) -> int:
    return mix64(state * _GOLDEN + value + _OFFSET)


def episode_key(seed: int, day: int, episode: int) -> int:
    if not 0 <= seed <= MASK64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
    return absorb(absorb(absorb(0, seed), day), episode)


def draw(key: int, stream: int, step: int) -> int:
    return mix64(absorb(absorb(key, stream), step))


def uniform(key: int, stream: int, step: int) -> float:
    """A float in [0, 1) with 53 random bits."""
    return (draw(key, stream, step) >> 11) * (1.0 / (1 << 53))


def integer(key: int, stream: int, step: int, high: int) -> int:
    """An integer in [0, high) by multiply-shift (high < 2**32)."""
    return ((draw(key, stream, step) >> 32) * high) >> 32


# Vectorized twins: same arithmetic on uint64 arrays (numpy wraps modulo 2**64 silently for arrays).
_U = np.uint64


def mix64_array(value: np.ndarray) -> np.ndarray:
    value = value ^ (value >> _U(30))
    value = value * _U(_MIX1)
    value = value ^ (value >> _U(27))
    value = value * _U(_MIX2)
    return value ^ (value >> _U(31))


def absorb_array(state: np.ndarray, value: np.ndarray | int) -> np.ndarray:
    return mix64_array(state * _U(_GOLDEN) + np.asarray(value, dtype=np.uint64) + _U(_OFFSET))


def episode_keys(seed: int, day: int, episodes: np.ndarray) -> np.ndarray:
    episode_key(seed, day, 0)  # validates the seed
    prefix = np.full(len(episodes), absorb(absorb(0, seed), day), dtype=np.uint64)
    return absorb_array(prefix, np.asarray(episodes, dtype=np.uint64))


def draw_array(keys: np.ndarray, stream: int, steps: np.ndarray | int) -> np.ndarray:
    return mix64_array(absorb_array(absorb_array(keys, stream), steps))


def uniform_array(keys: np.ndarray, stream: int, steps: np.ndarray | int) -> np.ndarray:
    return (draw_array(keys, stream, steps) >> _U(11)).astype(np.float64) * (1.0 / (1 << 53))


def integer_array(keys: np.ndarray, stream: int, steps: np.ndarray | int, high: np.ndarray | int) -> np.ndarray:
    high = np.asarray(high, dtype=np.uint64)
    return (((draw_array(keys, stream, steps) >> _U(32)) * high) >> _U(32)).astype(np.int64)
