"""Scheduling a day's episodes: lock-step batches, concurrent HTTP connections, worker processes.

Every episode's outcome is fixed by its counter-based key and the recommender's answers, so outcomes and traces are
identical for any number of processes and connections. What the scheduling does guarantee is the order a recommender
service sees: all sessions of one user run in one process, and within it no two sessions of one user run at once,
so each user's sessions reach the service one after the other, in episode order.
"""
from __future__ import annotations

import multiprocessing
import queue as queue_module
import threading
from typing import Callable

import numpy as np

from sim.agents import InvalidAnswer, ServiceUnavailable, answers_in_batches, make_agent
from sim.episodes import Outcomes, SimulatedClock, outcomes_of, play_episode, play_in_order
from sim.lockstep import run_lockstep_in_chunks
from sim.world import World


class UserScheduler:
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


def run_share(world: World, agent, url, seed: int, day: int, episodes: np.ndarray, user_rows: np.ndarray, *,
              strict: bool, trace: bool, connections: int, progress: Callable[[int], object],
              clock: SimulatedClock | None = None) -> Outcomes:
    """One process's share of a day: lock-step for batch recommenders, threads for HTTP, else one by one."""
    options = dict(strict=strict, trace=trace, progress=progress)
    if answers_in_batches(agent):
        return run_lockstep_in_chunks(world, make_agent(agent, world, url), seed, day, episodes, **options)
    if agent == "http" and connections > 1:
        return _run_over_connections(world, url, seed, day, episodes, user_rows, connections, clock=clock, **options)
    single = make_agent(agent, world, url)
    try:
        return play_in_order(world, single, seed, day, episodes, user_rows, clock=clock, **options)
    finally:
        if hasattr(single, "close"):
            single.close()


def _run_over_connections(world, url, seed, day, episodes, user_rows, connections, *, strict, trace, progress,
                          clock):
    """`connections` threads, each with its own keep-alive HTTP connection, sharing one `UserScheduler`."""
    scheduler = UserScheduler(episodes, user_rows)
    played: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def serve_one_connection():
        agent = make_agent("http", world, url)
        try:
            while (item := scheduler.take()) is not None:
                episode, user = item
                try:
                    played[episode] = play_episode(world, agent, seed, day, episode, strict=strict, trace=trace,
                                                   clock=clock)
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
    return outcomes_of(world, episodes, user_rows, [played[e] for e in episodes.tolist()], trace)


_ERRORS = {"InvalidAnswer": InvalidAnswer, "ServiceUnavailable": ServiceUnavailable}


def _worker(queue, world, agent, url, seed, day, episodes, user_rows, strict, trace, connections, clock, index):
    try:
        part = run_share(
            world, agent, url, seed, day, episodes, user_rows, strict=strict, trace=trace, connections=connections,
            progress=lambda n: queue.put(("progress", n)), clock=clock,
        )
        queue.put(("done", index, part))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        queue.put(("error", type(error).__name__, str(error)))


def run_in_processes(world: World, agent, url, seed: int, day: int, episodes: np.ndarray, user_rows: np.ndarray,
                     process_of: np.ndarray, processes: int, *, strict: bool, trace: bool, connections: int,
                     progress: Callable[[int], object], clock: SimulatedClock | None = None) -> Outcomes:
    """Episode i runs in worker process `process_of[i]` (the same for all of a user's episodes), forked per day."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(
            target=_worker,
            args=(queue, world, agent, url, seed, day, episodes[process_of == p], user_rows[process_of == p],
                  strict, trace, connections, clock, p),
            daemon=True,
        )
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    parts: dict[int, Outcomes] = {}
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
    return Outcomes.merge([parts[p] for p in range(processes)], trace)
