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
import time
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RunSettings:
    """What every share of a run plays against, the same in every process and connection: the world, the agent
    (a name, a recommender object or a per-process factory; see `sim.agents`), the service's URL for "http", the
    seed, the run's simulated clock, whether an invalid answer stops the run (`strict`), whether to keep traces,
    and the keep-alive connections per process for "http"."""

    world: World
    agent: object
    url: str | None
    seed: int
    clock: SimulatedClock
    strict: bool = False
    trace: bool = False
    connections: int = 1

    def make_agent(self, process: int = 0):
        return make_agent(self.agent, self.world, self.url, clock=self.clock, process=process)


def run_share(
    settings: RunSettings,
    day: int,
    episodes: np.ndarray,
    user_rows: np.ndarray,
    progress: Callable[[int], object],
    *,
    process: int = 0,
) -> Outcomes:
    """One process's share of a day: lock-step for batch recommenders, threads for HTTP, else one by one."""
    options = dict(strict=settings.strict, trace=settings.trace, progress=progress)
    if answers_in_batches(settings.agent):
        return run_lockstep_in_chunks(
            settings.world, settings.make_agent(process), settings.seed, day, episodes, **options
        )
    if settings.agent == "http" and settings.connections > 1:
        return _run_over_connections(settings, day, episodes, user_rows, progress)
    single = settings.make_agent(process)
    try:
        return play_in_order(settings.world, single, settings.seed, day, episodes, user_rows, **options)
    finally:
        if hasattr(single, "close"):
            single.close()


def _run_over_connections(settings: RunSettings, day, episodes, user_rows, progress):
    """`connections` threads, each with its own keep-alive HTTP connection, sharing one `UserScheduler`."""
    scheduler = UserScheduler(episodes, user_rows)
    played: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def serve_one_connection():
        agent = settings.make_agent()
        try:
            while (item := scheduler.take()) is not None:
                episode, user = item
                try:
                    played[episode] = play_episode(
                        settings.world, agent, settings.seed, day, episode, strict=settings.strict, trace=settings.trace
                    )
                finally:
                    scheduler.release(user)
                progress(1)
        except BaseException as error:  # noqa: BLE001 - re-raised in the calling thread below
            errors.append(error)
            scheduler.stop()
        finally:
            agent.close()

    threads = [threading.Thread(target=serve_one_connection, daemon=True) for _ in range(settings.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return outcomes_of(settings.world, episodes, user_rows, [played[e] for e in episodes.tolist()], settings.trace)


_ERRORS = {"InvalidAnswer": InvalidAnswer, "ServiceUnavailable": ServiceUnavailable}


class _BatchedProgress:
    """Progress sent to the parent at most every `interval` seconds: a message per episode would wake the queue's
    feeder thread thousands of times a second, and its fight for the GIL slowed the worker by a third."""

    def __init__(self, queue, interval: float = 0.2):
        self._queue, self._interval = queue, interval
        self._pending, self._sent_at = 0, time.monotonic()
        self._lock = threading.Lock()  # the http agent's connection threads share one

    def __call__(self, count: int) -> None:
        with self._lock:
            self._pending += count
            due = time.monotonic() - self._sent_at >= self._interval
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending, self._sent_at = self._pending, 0, time.monotonic()
        if pending:
            self._queue.put(("progress", pending))


def _worker(queue, settings: RunSettings, day, episodes, user_rows, index):
    try:
        progress = _BatchedProgress(queue)
        part = run_share(settings, day, episodes, user_rows, progress, process=index)
        progress.flush()
        queue.put(("done", index, part))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        queue.put(("error", type(error).__name__, str(error)))


def run_in_processes(
    settings: RunSettings,
    day: int,
    episodes: np.ndarray,
    user_rows: np.ndarray,
    process_of: np.ndarray,
    processes: int,
    progress: Callable[[int], object],
) -> Outcomes:
    """Episode i runs in worker process `process_of[i]` (the same for all of a user's episodes), forked per day."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(
            target=_worker,
            args=(queue, settings, day, episodes[process_of == p], user_rows[process_of == p], p),
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
    return Outcomes.merge([parts[p] for p in range(processes)], settings.trace)
