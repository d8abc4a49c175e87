"""Simulator throughput in-process: random recommender, default world, one process. Prints one JSON object.

The world is generated into a temporary folder from params.yaml's `world:` section (or read from --world).
Simulation time excludes loading the world and preparing the interests' nearest neighbours, which are reported
separately.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sim.agents import RandomRecommender
from sim.episodes import play_episode
from sim.loader import load_world
from sim.lockstep import episode_starts
from sim.run import simulate

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def measure_http(world_dir: str, args) -> dict:
    """Steps/s of `--agent http` against `python -m botify serve` (in-memory store, one granian worker)."""
    from botify.launch import served

    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "config.yaml"
        config.write_text(
            f"catalog: {Path(world_dir).resolve() / 'tracks.json'}\nlog_dir: log\nstore: memory\nseed: 31337\n"
            "experiments:\n  - name: BENCH\n    arms:\n      - recommender: random\n      - recommender: random\n"
        )
        with served(config) as url:
            summary = simulate(
                world_dir,
                agent="http",
                url=url,
                episodes=args.http_episodes,
                seed=args.seed,
                processes=args.processes,
                connections=args.connections,
                progress=False,
            )
    return {
        "episodes": args.http_episodes,
        "processes": args.processes,
        "connections_per_process": args.connections,
        "steps": summary["total"]["steps"],
        "steps_per_second": round(summary["steps_per_second"]),
        "invalid_answers": summary["invalid_answers"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world", help="world folder (default: generate the default 50,000-track world)")
    parser.add_argument("--episodes", type=int, default=200_000)
    parser.add_argument("--scalar-episodes", type=int, default=5_000, help="episodes for the scalar-path figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--http-episodes",
        type=int,
        default=0,
        help="also measure the http agent against the real botify service (random arms) on loopback",
    )
    parser.add_argument("--processes", type=int, default=2, help="worker processes for the http figure")
    parser.add_argument("--connections", type=int, default=4, help="connections per process for the http figure")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        generate_seconds = None
        world_dir = args.world or scratch
        if not args.world:  # in a child process, so the generator's memory does not count as the simulator's
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "sim", "world", "--out", scratch, "--params", str(PARAMS)],
                check=True,
                capture_output=True,
            )
            generate_seconds = time.perf_counter() - started
        started = time.perf_counter()
        world = load_world(world_dir)
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        _, _, interests = episode_starts(world, args.seed, 0, np.arange(args.episodes))
        world.prepare_neighbours(interests)
        neighbour_seconds = time.perf_counter() - started

        summary = simulate(world, agent="random", episodes=args.episodes, seed=args.seed, progress=False)

        agent = RandomRecommender(world.n_tracks)
        started = time.perf_counter()
        scalar_steps = sum(
            play_episode(world, agent, args.seed, 0, e, strict=False, trace=False)[1]
            for e in range(args.scalar_episodes)
        )
        scalar_seconds = time.perf_counter() - started
        http = measure_http(world_dir, args) if args.http_episodes else None

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "benchmark": "sim_throughput",
                "world": args.world or "default generated (50,000 tracks x 32, 10,000 users, seed 0)",
                "episodes": args.episodes,
                "steps": summary["total"]["steps"],
                "steps_per_second": round(summary["steps_per_second"]),
                "scalar_steps_per_second": round(scalar_steps / scalar_seconds),
                "simulate_seconds": round(summary["seconds"], 3),
                "generate_world_seconds_with_startup": round(generate_seconds, 3)
                if generate_seconds is not None
                else None,
                "load_world_seconds": round(load_seconds, 3),
                "prepare_neighbours_seconds": round(neighbour_seconds, 3),
                "mean_reward": round(summary["total"]["reward_mean"], 4),
                "mean_steps": round(summary["total"]["steps_mean"], 4),
                "peak_rss_mb": round(peak_kib / 1024, 1),
                "http": http,
                "python": sys.version.split()[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
