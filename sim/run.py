"""`simulate()`: days of listening sessions against a recommender, with a summary, a trace and optional sharding.

Episode `e` of day `d` draws everything from the counter-based key (seed, d, e), so traces are identical for any
number of processes and connections (see `sim.parallel` for the order a service sees). A run can be split into
shards: shard i of n plays exactly the episodes whose user row (in users.json) is i modulo n, in episode order, so
all of one user's sessions stay in one shard and the shards' traces together are the unsharded run's trace.
"""

from __future__ import annotations

import os
import sys
import time as clock
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sim.agents import is_process_factory, make_agent
from sim.episodes import Outcomes, SimulatedClock
from sim.loader import load_world
from sim.lockstep import episode_starts
from sim.parallel import RunSettings, run_in_processes, run_share
from sim.summary import summarize
from sim.world import World


def parse_shard(text: str) -> tuple[int, int]:
    """Parse "I/N" (as `--shard` takes it) into (i, n) with 0 <= i < n."""
    index, slash, count = text.partition("/")
    try:
        shard = (int(index), int(count)) if slash else None
    except ValueError:
        shard = None
    if shard is None:
        raise ValueError(f"a shard is written I/N, e.g. 0/3; got {text!r}")
    return check_shard(shard)


def check_shard(shard) -> tuple[int, int]:
    index, count = (int(value) for value in shard)
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= I < N")
    return index, count


def ask_to_continue(next_day: int) -> bool:
    """The course's prompt between days; end of input means stop (never loop on EOF)."""
    while True:
        try:
            answer = input(f"Continue with day {next_day}? [y/n] ").strip().lower()
        except EOFError:
            return False
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


def simulate(
    world_dir,
    *,
    agent="random",
    episodes: int,
    seed: int,
    days: int = 1,
    first_day: int = 0,
    processes: int = 1,
    url: str | None = None,
    trace_path=None,
    strict: bool = False,
    progress: bool = True,
    connections: int = 4,
    pause_between_days: bool = False,
    shard: tuple[int, int] | None = None,
) -> dict:
    """Run `days` x `episodes` sessions and return the summary (what `--summary` writes).

    `agent` is "random", "http" (needs `url`), "console", or an in-process recommender object. `connections`
    is the number of concurrent keep-alive connections per process for the http agent. `shard=(i, n)` plays only
    the episodes whose user row is i modulo n; the summary then covers those episodes. `first_day` continues an
    earlier run of the same seed and episodes per day: its days are that run's next days (their users, first
    tracks and simulated clock), so a service can be changed between days, as the course's loop of days did.
    """
    if episodes < 1 or days < 1 or processes < 1 or connections < 1:
        raise ValueError("episodes, days, processes and connections must be at least 1")
    if first_day < 0:
        raise ValueError(f"first_day must be at least 0, got {first_day}")
    if agent == "console" and processes != 1:
        raise ValueError("the console agent runs in one process")
    shard_index, shard_count = check_shard(shard) if shard is not None else (0, 1)
    world = world_dir if isinstance(world_dir, World) else load_world(world_dir)
    if not is_process_factory(agent):
        make_agent(agent, world, url)  # fail early on a bad agent or missing URL (a factory is checked when used)
    all_episodes = np.arange(episodes, dtype=np.int64)
    plans = []  # per day: (episodes, user rows) of this shard
    day_numbers = range(first_day, first_day + days)
    for day in day_numbers:
        _, user_rows, interests = episode_starts(world, seed, day, all_episodes)
        mine = user_rows % shard_count == shard_index
        world.prepare_neighbours(interests[mine])
        plans.append((all_episodes[mine], user_rows[mine]))

    trace_file = temporary_trace = None
    if trace_path is not None:
        trace_path = Path(trace_path)
        temporary_trace = trace_path.with_name(f".{trace_path.name}.tmp-{os.getpid()}")
        trace_file = open(temporary_trace, "wb")
    trace = trace_file is not None
    total_episodes = sum(len(day_episodes) for day_episodes, _ in plans)
    bar = tqdm(total=total_episodes, unit="episode", disable=not progress or agent == "console", file=sys.stderr)
    per_day, day_outcomes, seconds = [], [], 0.0
    settings = RunSettings(
        world,
        agent,
        url,
        seed,
        SimulatedClock(episodes_per_day=episodes),
        strict=strict,
        trace=trace,
        connections=connections,
    )
    try:
        for day, (day_episodes, user_rows) in zip(day_numbers, plans):
            if day > first_day and pause_between_days and not ask_to_continue(day):
                break
            started = clock.perf_counter()
            if processes == 1:
                outcomes = run_share(settings, day, day_episodes, user_rows, bar.update)
            else:
                process_of = (user_rows // shard_count) % processes
                outcomes = run_in_processes(settings, day, day_episodes, user_rows, process_of, processes, bar.update)
            seconds += clock.perf_counter() - started
            if trace:
                trace_file.writelines(outcomes.trace)
            day_outcomes.append(outcomes)
            per_day.append(summarize({"day": day}, outcomes))
        if trace:
            trace_file.close()
            os.replace(temporary_trace, trace_path)
    finally:
        bar.close()
        if trace and not trace_file.closed:
            trace_file.close()
        if temporary_trace is not None and temporary_trace.exists():
            temporary_trace.unlink()
    total = summarize({}, Outcomes.merge(day_outcomes, trace=False))
    return {
        "world": str(world.path) if world.path else None,
        "agent": agent if isinstance(agent, str) else type(agent).__name__,
        "url": url,
        "seed": seed,
        "episodes": episodes,
        "shard": [shard_index, shard_count] if shard is not None else None,
        "days": days,
        "first_day": first_day,
        "days_run": len(per_day),
        "processes": processes,
        "connections": connections if agent == "http" else None,
        "per_day": per_day,
        "total": total,
        "seconds": seconds,
        "steps_per_second": total["steps"] / seconds if seconds > 0 else None,
        "invalid_answers": total["invalid_answers"],
    }
