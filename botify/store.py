"""Per-user request counters: the only state the service shares between requests and worker processes.

The counter numbers a user's /next requests, so a recommendation's random draw depends on which of that user's
requests it is rather than on when other users' requests arrived. Redis (INCR) shares it across workers.
"""
from __future__ import annotations

import threading

import redis


class MemoryStore:
    """Counters in this process; for one worker."""

    shared_between_processes = False

    def __init__(self):
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def next_request_number(self, user: int) -> int:
        with self._lock:
            number = self._counts.get(user, 0)
            self._counts[user] = number + 1
        return number

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def close(self) -> None:
        pass


class RedisStore:
    """Counters in one Redis hash (plain integers, no pickles), shared by every worker of a service."""

    shared_between_processes = True

    def __init__(self, url: str, key: str = "botify:requests"):
        self.url = url
        self.key = key
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5)

    def next_request_number(self, user: int) -> int:
        return self.client.hincrby(self.key, str(user), 1) - 1

    def reset(self) -> None:
        """Start counting afresh, so a rerun of the same seeded traffic reproduces the same recommendations."""
        self.client.delete(self.key)

    def close(self) -> None:
        self.client.close()


def open_store(spec: str):
    return MemoryStore() if spec == "memory" else RedisStore(spec)
