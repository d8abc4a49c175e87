"""Running the simulation: days of episodes against a recommender, in one or several processes.

Episode `e` of day `d` draws everything from the counter-based key (seed, d, e), so its outcome depends only on the
recommender's answers, never on which process, thread or batch ran it: traces are identical for any `processes`
and `connections`. All sessions of one user run in one process (users are split by row modulo `processes`), and
within it a scheduler never runs two sessions of one user at once, so a service sees each user's sessions one after
the other, in episode order.
"""
from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import sys
import threading
import time as clock
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sim import rng
from sim.agents import (
    ConsoleRecommender,
    HttpRecommender,
    InvalidAnswer,
    RandomRecommender,
    ServiceUnavailable,
    validate_answer,
)
from sim.engine import episode_starts, run_lockstep
from sim.user import Session, trace_line
from sim.world import World, load_world

AGENTS = ("random", "http", "console")
LOCKSTEP_CHUNK = 8192


@dataclass
class DayPart:
    """Outcomes of some episodes of one day, in episode order."""

    episodes: np.ndarray
    rewards: np.ndarray
    steps: np.ndarray
    invalid: np.ndarray
    trace: list[bytes] | None

    @staticmethod
    def merge(parts: list["DayPart"]) -> "DayPart":
        episodes = np.concatenate([p.episodes for p in parts])
        order = np.argsort(episodes, kind="stable")
        trace = None
        if parts and all(p.trace is not None for p in parts):
            flat = [line for p in parts for line in p.trace]
            trace = [flat[i] for i in order]
        return DayPart(
            episodes[order],
            np.concatenate([p.rewards for p in parts])[order],
            np.concatenate([p.steps for p in parts])[order],
            np.concatenate([p.invalid for p in parts])[order],
            trace,
        )


def make_agent(agent, world: World, url: str | None, timeout: float = 5.0):
    if agent == "random":
        return RandomRecommender(world.n_tracks)
    if agent == "http":
        if not url:
            raise ValueError("the http agent needs a URL (e.g. --url http://127.0.0.1:5000)")
        return HttpRecommender(url, timeout=timeout)
    if agent == "console":
        return ConsoleRecommender(world.describe_track, world.n_tracks)
    if isinstance(agent, str):
        raise ValueError(f"unknown agent {agent!r}; choose one of {AGENTS} or pass a recommender object")
    if not callable(getattr(agent, "recommend", None)):
        raise TypeError("an in-process recommender needs a recommend(user, track, time) method")
    return agent


def play_episode(world: World, agent, seed: int, day: int, episode: int, *, strict: bool, trace: bool):
    """One session against `agent`: (reward, steps, invalid answers, trace bytes)."""
    session = Session(world, rng.episode_key(seed, day, episode))
    user, interest = session.user, session.interest
    lines = [trace_line(day, episode, user, interest, 0, session.last_track, 1.0, session.budget)] if trace else None
    if hasattr(agent, "start_session"):
        agent.start_session(user, session.key)
    invalid = 0
    while not session.done:
        try:
            track = validate_answer(agent.recommend(user, session.last_track, session.last_time), world.n_tracks)
        except InvalidAnswer as error:
            if strict:
                raise InvalidAnswer(f"day {day} episode {episode} user {user} step {session.step + 1}: {error}")
            invalid += 1
            session.hear_nothing()
            track = None
        else:
            session.listen(track)
        if trace:
            lines.append(trace_line(day, episode, user, interest, session.step, track, session.last_time, session.budget))
    if hasattr(agent, "end_session"):
        try:
            agent.end_session(user, session.last_track, session.last_time)
        except InvalidAnswer as error:
            if strict:
                raise InvalidAnswer(f"day {day} episode {episode} user {user} /last: {error}")
            invalid += 1
    return session.reward, session.step, invalid, b"".join(lines) if trace else None


def _part_from(episodes, outcomes, trace: bool) -> DayPart:
    return DayPart(
        np.asarray(episodes, dtype=np.int64),
        np.array([o[0] for o in outcomes], dtype=np.float64),
        np.array([o[1] for o in outcomes], dtype=np.int64),
        np.array([o[2] for o in outcomes], dtype=np.int64),
        [o[3] for o in outcomes] if trace else None,
    )


class _UserScheduler:
    """Hands out episodes in order, skipping those whose user already has a session running."""

    def __init__(self, episodes: np.ndarray, user_rows: np.ndarray):
        self._pending = list(zip(episodes.tolist(), user_rows.tolist()))
        self._active: set[int] = set()
        self._stopped = False
        self._condition = threading.Condition()

    def take(self) -> tuple[int, int] | None:
        with self._condition:
            while not self._stopped and self._pending:
                for position, (episode, user) in enumerate(self._pending):
                    if user not in self._active:
                        del self._pending[position]
                        self._active.add(user)
                        return episode, user
                self._condition.wait()
            return None

    def release(self, user: int) -> None:
        with self._condition:
            self._active.discard(user)
            self._condition.notify_all()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify_all()


def _answers_in_batches(agent) -> bool:
    """Lock-step needs a batch method and no per-session calls (it makes none)."""
    return not isinstance(agent, str) and hasattr(agent, "recommend_batch") and not hasattr(agent, "end_session")


def run_episodes(world, agent, url, seed, day, episodes, user_rows, *, strict, trace, connections, progress) -> DayPart:
    """One process's share of a day: lock-step for batch recommenders, threads for HTTP, else one by one."""
    if agent == "random" or _answers_in_batches(agent):
        batch_agent = make_agent(agent, world, url)
        parts = []
        for start in range(0, len(episodes), LOCKSTEP_CHUNK):
            chunk = episodes[start : start + LOCKSTEP_CHUNK]
            result = run_lockstep(world, batch_agent, seed, day, chunk, strict=strict, trace=trace)
            parts.append(DayPart(result.episodes, result.rewards, result.steps, result.invalid, result.trace))
            progress(len(chunk))
        return DayPart.merge(parts) if parts else _part_from([], [], trace)
    if agent == "http" and connections > 1:
        return _run_threaded(world, url, seed, day, episodes, user_rows, strict, trace, connections, progress)
    single = make_agent(agent, world, url)
    try:
        outcomes = []
        for episode in episodes.tolist():
            outcomes.append(play_episode(world, single, seed, day, episode, strict=strict, trace=trace))
            progress(1)
    finally:
        if hasattr(single, "close"):
            single.close()
    return _part_from(episodes, outcomes, trace)


def _run_threaded(world, url, seed, day, episodes, user_rows, strict, trace, connections, progress) -> DayPart:
    scheduler = _UserScheduler(episodes, user_rows)
    outcomes: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def serve_one_connection():
        agent = make_agent("http", world, url)
        try:
            while (item := scheduler.take()) is not None:
                episode, user = item
                try:
                    outcomes[episode] = play_episode(world, agent, seed, day, episode, strict=strict, trace=trace)
                finally:
                    scheduler.release(user)
                progress(1)
        except BaseException as error:  # noqa: BLE001 - re-raised in the calling thread below
            errors.append(error)
            scheduler.stop()
        finally:
            agent.close()

    threads = [threading.Thread(target=serve_one_connection, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return _part_from(episodes, [outcomes[e] for e in episodes.tolist()], trace)


_ERRORS = {"InvalidAnswer": InvalidAnswer, "ServiceUnavailable": ServiceUnavailable}


def _worker(queue, world, agent, url, seed, day, episodes, user_rows, strict, trace, connections, index):
    try:
        part = run_episodes(
            world, agent, url, seed, day, episodes, user_rows,
            strict=strict, trace=trace, connections=connections, progress=lambda n: queue.put(("progress", n)),
        )
        queue.put(("done", index, part))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        queue.put(("error", type(error).__name__, str(error)))


def _run_day_in_processes(world, agent, url, seed, day, episodes, user_rows, processes, **options) -> DayPart:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    shares = [episodes[user_rows % processes == p] for p in range(processes)]
    share_users = [user_rows[user_rows % processes == p] for p in range(processes)]
    progress = options.pop("progress")
    workers = [
        context.Process(
            target=_worker,
            args=(queue, world, agent, url, seed, day, shares[p], share_users[p],
                  options["strict"], options["trace"], options["connections"], p),
            daemon=True,
        )
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    parts: dict[int, DayPart] = {}
    try:
        while len(parts) < processes:
            try:
                message = queue.get(timeout=1.0)
            except queue_module.Empty:  # check that no worker died silently
                if any(not w.is_alive() and w.exitcode not in (0, None) for w in workers):
                    raise RuntimeError("a simulation worker process died") from None
                continue
            if message[0] == "progress":
                progress(message[1])
            elif message[0] == "done":
                parts[message[1]] = message[2]
            else:
                raise _ERRORS.get(message[1], RuntimeError)(message[2])
    finally:
        for worker in workers:
            if worker.is_alive() and len(parts) < processes:
                worker.terminate()
            worker.join()
    return DayPart.merge([parts[p] for p in range(processes)])


def _stats(values: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and standard error, the latter as scipy.stats.sem computes it (ddof=1) without its 46 MB import."""
    if len(values) == 0:
        return None, None
    sem = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
    return float(np.mean(values)), sem


def _summarize(label: dict, part: DayPart) -> dict:
    reward_mean, reward_sem = _stats(part.rewards)
    steps_mean, steps_sem = _stats(part.steps)
    return {
        **label,
        "episodes": int(len(part.episodes)),
        "steps": int(part.steps.sum()),
        "reward_mean": reward_mean,
        "reward_sem": reward_sem,
        "steps_mean": steps_mean,
        "steps_sem": steps_sem,
        "invalid_answers": int(part.invalid.sum()),
    }


def _ask_to_continue(next_day: int) -> bool:
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
    processes: int = 1,
    url: str | None = None,
    trace_path=None,
    strict: bool = False,
    progress: bool = True,
    connections: int = 4,
    pause_between_days: bool = False,
) -> dict:
    """Run `days` x `episodes` sessions and return the summary (what `--summary` writes).

    `agent` is "random", "http" (needs `url`), "console", or an in-process recommender object. `connections`
    is the number of concurrent keep-alive connections per process for the http agent.
    """
    if episodes < 1 or days < 1 or processes < 1 or connections < 1:
        raise ValueError("episodes, days, processes and connections must be at least 1")
    if agent == "console" and processes != 1:
        raise ValueError("the console agent runs in one process")
    world = world_dir if isinstance(world_dir, World) else load_world(world_dir)
    make_agent(agent, world, url)  # fail early on a bad agent or missing URL
    episode_ids = np.arange(episodes, dtype=np.int64)
    starts = [episode_starts(world, seed, day, episode_ids) for day in range(days)]
    world.prepare_neighbours(np.concatenate([interests for _, _, interests in starts]))

    trace_file = temporary_trace = None
    if trace_path is not None:
        trace_path = Path(trace_path)
        temporary_trace = trace_path.with_name(f".{trace_path.name}.tmp-{os.getpid()}")
        trace_file = open(temporary_trace, "wb")
    bar = tqdm(total=episodes * days, unit="episode", disable=not progress or agent == "console", file=sys.stderr)
    per_day, day_parts, seconds = [], [], 0.0
    try:
        for day in range(days):
            if day and pause_between_days and not _ask_to_continue(day):
                break
            _, user_rows, _ = starts[day]
            options = dict(strict=strict, trace=trace_file is not None, connections=connections, progress=bar.update)
            started = clock.perf_counter()
            if processes == 1:
                part = run_episodes(world, agent, url, seed, day, episode_ids, user_rows, **options)
            else:
                part = _run_day_in_processes(world, agent, url, seed, day, episode_ids, user_rows, processes, **options)
            seconds += clock.perf_counter() - started
            if trace_file is not None:
                trace_file.writelines(part.trace)
            day_parts.append(part)
            per_day.append(_summarize({"day": day}, part))
        if trace_file is not None:
            trace_file.close()
            os.replace(temporary_trace, trace_path)
    finally:
        bar.close()
        if trace_file is not None and not trace_file.closed:
            trace_file.close()
        if temporary_trace is not None and temporary_trace.exists():
            temporary_trace.unlink()
    total = _summarize({}, DayPart.merge(day_parts) if day_parts else _part_from([], [], False))
    return {
        "world": str(world.path) if world.path else None,
        "agent": agent if isinstance(agent, str) else type(agent).__name__,
        "url": url,
        "seed": seed,
        "episodes": episodes,
        "days": days,
        "days_run": len(per_day),
        "processes": processes,
        "connections": connections if agent == "http" else None,
        "per_day": per_day,
        "total": total,
        "seconds": seconds,
        "steps_per_second": total["steps"] / seconds if seconds > 0 else None,
        "invalid_answers": total["invalid_answers"],
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

