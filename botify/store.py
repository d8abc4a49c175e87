"""Per-user request counters: the only state the service shares between requests and worker processes.

The counter numbers a user's /next requests, so a recommendation's random draw depends on which of that user's
requests it is rather than on when other users' requests arrived. The counters belong to a log folder: a service
restarted on a folder that already holds events continues them (so a restarted experiment replays), a service
started on a new or empty folder (or with `--reset-counters`) starts them at zero.

- `MemoryStore` (one worker): counters in the process, saved on a clean stop into `<log_dir>/.botify-counters.json`
  (JSON, written atomically) and restored at start-up. A worker killed with SIGKILL loses its counts since start-up.
- `RedisStore` (any number of workers): one Redis hash per log folder, incremented by a Lua script that also
  checks a marker field, so a hash that vanished (Redis restarted without persistence, or flushed) is reported on
  stderr instead of silently counting afresh. Every call has a 0.5 s timeout; after a failure the store answers
  `StoreUnavailable` at once for a second (then tries Redis again), so a dead or stalled Redis costs each /next
  at most one timeout and the service recovers by itself.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from botify_lab.formats import atomic_write_bytes

from .eventlog import LogDirError, warn

COUNTERS_FILE_NAME = ".botify-counters.json"
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_RETRY_AFTER_SECONDS = 1.0
MARKER_FIELD = "_started"  # never a user id (those are digits)

# Returns {the user's request number, 1 when the hash had to be recreated}.
NEXT_NUMBER_SCRIPT = """
local created = redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])
return {redis.call('HINCRBY', KEYS[1], ARGV[1], 1) - 1, created}
"""


class StoreUnavailable(RuntimeError):
    """The counter store cannot number this request (Redis down or stalled); the request is refused, not logged."""


class MemoryStore:
    """Counters in this process; for one worker."""

    shared_between_processes = False

    def __init__(self, counters_path: Path | None = None):
        self.counters_path = None if counters_path is None else Path(counters_path)
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self._counting_pid: int | None = None  # the process that handed out numbers (and so saves them)

    def start(self, fresh: bool) -> str:
        """Zero the counters (fresh) or restore the saved ones; returns a phrase for the startup line."""
        path = self.counters_path
        if fresh or path is None:
            self.reset()
            if path is not None and path.exists():
                path.unlink()
            return "counters from zero"
        if not path.exists():
            warn(
                f"the log folder holds events but no saved counters ({path}): the last stop was not clean, so "
                "counting starts from zero and earlier users' random draws may repeat"
            )
            return "counters from zero (none saved)"
        try:
            saved = orjson.loads(path.read_bytes())
            counts = {int(user): number for user, number in saved["counts"].items()}
            if not all(type(number) is int and number >= 0 for number in counts.values()):
                raise ValueError("counts must be non-negative integers")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise LogDirError(
                f"cannot restore the request counters from {path} ({error}); start with "
                "--reset-counters to count from zero"
            ) from None
        with self._lock:
            self._counts = counts
        return f"counters of {len(counts)} users restored"

    @classmethod
    def merged(cls, counters_path: Path, saved: list[Path]) -> MemoryStore:
        """A store holding the saved counters of several folders whose users are disjoint (the parts an in-process
        run serves from, one per simulation process), to be saved as one folder's."""
        store = cls(counters_path)
        for path in map(Path, saved):
            if not path.is_file():  # a process that served no request saved nothing
                continue
            counts = orjson.loads(path.read_bytes())["counts"]
            store._counts.update((int(user), number) for user, number in counts.items())
        return store

    def next_request_number(self, user: int) -> int:
        with self._lock:
            number = self._counts.get(user, 0)
            self._counts[user] = number + 1
            self._counting_pid = os.getpid()
        return number

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def save(self) -> None:
        """Write the counters atomically (a crash mid-save leaves the previous file), users in id order so the same
        requests give the same file whatever order they arrived in."""
        if self.counters_path is None:
            return
        with self._lock:
            payload = orjson.dumps({"counts": {str(user): self._counts[user] for user in sorted(self._counts)}})
        atomic_write_bytes(self.counters_path, payload)

    def close(self) -> None:
        """Save the counters if this process counted (the supervisor, which never serves, leaves the file alone)."""
        if self._counting_pid == os.getpid():
            try:
                self.save()
            except OSError as error:
                warn(f"cannot save the request counters to {self.counters_path}: {error}")
            self._counting_pid = None


class RedisStore:
    """Counters in one Redis hash per log folder (plain integers, no pickles), shared by every worker of a service."""

    shared_between_processes = True

    def __init__(self, url: str, key: str = "botify:requests", *, timeout: float = REDIS_TIMEOUT_SECONDS):
        self.url = url
        self.key = key
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._next_number = self.client.register_script(NEXT_NUMBER_SCRIPT)
        self._marker = str(time.time_ns())
        self._down_until = 0.0
        self._down_reason: str | None = None
        self._loss_reported = False

    def start(self, fresh: bool) -> str:
        """Delete the counters (fresh) or keep them, reporting a hash that vanished; raises RedisError if down."""
        if fresh:
            self.reset()
            return "counters from zero"
        if self.client.hexists(self.key, MARKER_FIELD):
            return f"counters of {self.client.hlen(self.key) - 1} users kept"
        warn(
            f"Redis ({self.url}) holds no request counters for this log folder (restarted without persistence, "
            "or flushed?): counting starts from zero and earlier users' random draws may repeat"
        )
        self.client.hsetnx(self.key, MARKER_FIELD, self._marker)
        return "counters from zero (lost by Redis)"

    def next_request_number(self, user: int) -> int:
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(f"request store unavailable: {self._down_reason}")
        try:
            number, created = self._next_number(keys=[self.key], args=[user, MARKER_FIELD, self._marker])
        except redis.RedisError as error:
            reason = f"{type(error).__name__}: {error}"
            if self._down_reason is None:
                warn(
                    f"Redis ({self.url}) unavailable ({reason}): /next answers 503, retrying every "
                    f"{REDIS_RETRY_AFTER_SECONDS:g} s (reported once)"
                )
            self._down_reason = reason
            self._down_until = time.monotonic() + REDIS_RETRY_AFTER_SECONDS
            raise StoreUnavailable(f"request store unavailable: {reason}") from None
        if self._down_reason is not None:
            warn(f"Redis ({self.url}) is reachable again")
            self._down_reason = None
        if created and not self._loss_reported:
            self._loss_reported = True
            warn(
                f"Redis ({self.url}) lost the request counters while serving (restarted without persistence, or "
                "flushed?): counting continues from zero and earlier users' random draws may repeat"
            )
        return int(number)

    def reset(self) -> None:
        """Start counting afresh, so a rerun of the same seeded traffic reproduces the same recommendations."""
        with self.client.pipeline() as pipe:
            pipe.delete(self.key)
            pipe.hset(self.key, MARKER_FIELD, self._marker)
            pipe.execute()

    def close(self) -> None:
        self.client.close()


def open_store(spec: str, log_dir: Path):
    """The store a config's `store` names, its counters tied to `log_dir`."""
    if spec == "memory":
        return MemoryStore(Path(log_dir) / COUNTERS_FILE_NAME)
    return RedisStore(spec, key=f"botify:requests:{Path(log_dir).resolve()}")
