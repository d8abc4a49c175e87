"""Recommenders the simulated users talk to, all behind one small interface.

A recommender is any object with `recommend(user, track, time) -> int` (the next track for the user who just heard
`track` for `time`) and, optionally, `end_session(user, track, time)` (the course's `/last` call),
`start_session(user, key)` (the episode's counter-based random key, so a random recommender's answers do not depend
on scheduling), `at(day, episode, step)` (where in the run the next call happens; an agent that sends or logs a time
turns it into milliseconds on its own `sim.episodes.SimulatedClock`) and
`recommend_batch(users, tracks, times, keys, steps) -> array` (answers for many sessions at once, which lets the
lock-step engine run; only for recommenders without per-user state).

An object with `for_process(index, clock) -> recommender` is a factory: each simulation process (index 0, 1, ...;
0 when the run has one) asks it for its own recommender, as the http agent opens its own connections. In-process
services use it to give each process its own state.
"""

from __future__ import annotations

import socket
import sys
import time as clock
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

import httptools
import numpy as np
import orjson

from sim import rng
from sim.world import World

if TYPE_CHECKING:
    from sim.episodes import SimulatedClock

AGENTS = ("random", "http", "console")
QUICK_ACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only; elsewhere the stall stays possible
# Answers worth asking again: the service (or a proxy before it) is briefly unable to answer. A 500 is the request's
# own failure (a recommender that raised): sent again it fails again, and each try would be served and recorded.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
RECEIVE_BYTES = 1 << 16


class InvalidAnswer(Exception):
    """The recommender's answer cannot be played (not an integer, outside the catalog, an HTTP error)."""


class ServiceUnavailable(RuntimeError):
    """The recommender service cannot be reached even after retries."""


class SimulationStopped(RuntimeError):
    """The person at the console ended the run."""


def validate_answer(answer: object, n_tracks: int) -> int:
    if isinstance(answer, bool) or not isinstance(answer, (int, np.integer)):
        raise InvalidAnswer(f"answer {answer!r} is not an integer track id")
    if not 0 <= answer < n_tracks:
        raise InvalidAnswer(f"answer {answer} is outside the catalog 0..{n_tracks - 1}")
    return int(answer)


class RandomRecommender:
    """A uniformly random catalog track, drawn from the episode's own counter-based stream."""

    def __init__(self, n_tracks: int):
        self.n_tracks = n_tracks
        self._key = 0
        self._step = 0

    def start_session(self, user: int, key: int) -> None:
        self._key, self._step = key, 0

    def recommend(self, user: int, track: int, time: float) -> int:
        self._step += 1
        return rng.integer(self._key, rng.AGENT, self._step, self.n_tracks)

    def recommend_batch(self, users, tracks, times, keys: np.ndarray, steps: np.ndarray) -> np.ndarray:
        return rng.integer_array(keys, rng.AGENT, steps, self.n_tracks)


class _KeepAliveConnection:
    """One HTTP/1.1 connection: a request written in one send, its answer parsed by httptools (llhttp, in C), which
    calls this object back as it reads.

    Python's http.client spent about 100 us of CPU per request here, most of it parsing the answer's headers into
    email.message objects; this costs about 15 us, which leaves the service the cores in a run over loopback.
    """

    def __init__(self, host: str, port: int, timeout: float):
        self.socket = socket.create_connection((host, port), timeout=timeout)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._complete = self._keep_alive = False

    def on_headers_complete(self) -> None:
        # Known once the headers are in: llhttp forgets it as the answer ends.
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, chunk: bytes) -> None:
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        self._complete = True

    def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send `request`, read its answer whole: (status, body, whether the connection may carry the next one)."""
        self._body.clear()
        self._complete = self._keep_alive = False
        self.socket.sendall(request)
        while not self._complete:
            if QUICK_ACK is not None:
                self.socket.setsockopt(socket.IPPROTO_TCP, QUICK_ACK, 1)
            data = self.socket.recv(RECEIVE_BYTES)
            if not data:
                raise ConnectionResetError("the service closed the connection before answering in full")
            self._parser.feed_data(data)
        return self._parser.get_status_code(), b"".join(self._body), self._keep_alive

    def close(self) -> None:
        self.socket.close()


class HttpRecommender:
    """The course protocol over one persistent keep-alive connection (`POST /next/<user>`, `POST /last/<user>`).

    Network failures, malformed answers and transient statuses (502, 503, 504) are retried a bounded number of
    times on a fresh connection; after that the service counts as down and the run stops with a clear error, never
    a hang. Bad HTTP answers are invalid answers, not crashes. Each request carries its simulated time on `clock` in
    the X-Botify-Time header, which a service on `clock: simulated` logs (the wall clock ignores it). Answers must
    give their length (Content-Length or chunked), as every WSGI server does.

    The socket acknowledges at once what it receives (TCP_QUICKACK, Linux). A server that writes the headers and the
    body of an answer separately (the course's gevent botify does) otherwise holds the body back until the headers
    are acknowledged, and the client's delayed acknowledgement makes every request on a reused connection wait about
    40 ms (77 steps/s against the course's service instead of thousands).
    """

    def __init__(
        self,
        url: str,
        *,
        clock: SimulatedClock | None = None,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.1,
    ):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected a URL like http://127.0.0.1:5000, got {url!r}")
        self.url = url
        self._prefix = parts.path.rstrip("/")
        self._host, self._port = parts.hostname, parts.port or 80
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        self._timeout, self._retries, self._backoff = timeout, retries, backoff
        self._connection: _KeepAliveConnection | None = None
        self._clock = clock
        self._time_header = b""

    def at(self, day: int, episode: int, step: int) -> None:
        if self._clock is not None:
            self._time_header = b"X-Botify-Time: %d\r\n" % self._clock.time_ms(day, episode, step)

    def _request(self, path: str, payload: dict) -> bytes:
        body = orjson.dumps(payload)
        head = (
            f"POST {self._prefix}{path} HTTP/1.1\r\nHost: {self._host_header}\r\nAccept-Encoding: identity\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        )
        return head.encode("latin-1") + self._time_header + b"\r\n" + body

    def _post(self, path: str, payload: dict) -> tuple[int, bytes]:
        request = self._request(path, payload)
        failure: Exception | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                clock.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                if self._connection is None:
                    self._connection = _KeepAliveConnection(self._host, self._port, self._timeout)
                status, data, reusable = self._connection.exchange(request)
            except (OSError, httptools.HttpParserError) as error:
                failure = error
                self.close()
                continue
            if not reusable:
                self.close()
            if status in TRANSIENT_STATUSES and attempt < self._retries:
                failure = InvalidAnswer(f"HTTP {status} from {path}")
                continue
            return status, data
        raise ServiceUnavailable(
            f"recommender service at {self.url} unreachable after {self._retries + 1} tries: {failure!r}"
        )

    def recommend(self, user: int, track: int, time: float) -> int:
        path = f"/next/{user}"
        status, data = self._post(path, {"track": track, "time": time})
        if status != 200:
            raise InvalidAnswer(f"HTTP {status} from POST {path}: {data[:200]!r}")
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise InvalidAnswer(f"POST {path} answered non-JSON {data[:200]!r}") from None
        if not isinstance(answer, dict) or "track" not in answer:
            raise InvalidAnswer(f"POST {path} answered {data[:200]!r} without a 'track'")
        return answer["track"]

    def end_session(self, user: int, track: int, time: float) -> None:
        path = f"/last/{user}"
        status, data = self._post(path, {"track": track, "time": time})
        if status != 200:
            raise InvalidAnswer(f"HTTP {status} from POST {path}: {data[:200]!r}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class ConsoleRecommender:
    """A person plays the recommender: shown what the user heard, they type the next track id."""

    def __init__(
        self,
        describe_track: Callable[[int], str],
        n_tracks: int,
        *,
        read_line: Callable[[str], str] = input,
        output: TextIO | None = None,
    ):
        self._describe, self._n_tracks = describe_track, n_tracks
        self._read_line, self._output = read_line, output

    @property
    def _out(self) -> TextIO:
        return self._output or sys.stdout

    def recommend(self, user: int, track: int, time: float) -> int:
        print(f"user {user} listened to [{self._describe(track)}] for {time:.2f}", file=self._out)
        while True:
            try:
                line = self._read_line(f"next track for user {user} (0..{self._n_tracks - 1}): ")
            except EOFError:
                raise SimulationStopped("console input closed") from None
            text = line.strip()
            if text.lstrip("-").isdigit() and 0 <= int(text) < self._n_tracks:
                return int(text)
            print(f"'{text}' is not a track id in 0..{self._n_tracks - 1}; try again", file=self._out)

    def end_session(self, user: int, track: int, time: float) -> None:
        print(f"user {user} left after [{self._describe(track)}] ({time:.2f})", file=self._out)


def make_agent(agent, world: World, url: str | None, *, clock: SimulatedClock | None = None, process: int = 0):
    """The recommender named by `agent` ("random", "http" with `url`, "console"), the recommender a factory makes
    for simulation process `process`, or `agent` itself when it is an in-process recommender object. `clock` is
    the run's simulated clock, for agents that send or log times."""
    if agent == "random":
        return RandomRecommender(world.n_tracks)
    if agent == "http":
        if not url:
            raise ValueError("the http agent needs a URL (e.g. --url http://127.0.0.1:5000)")
        return HttpRecommender(url, clock=clock)
    if agent == "console":
        return ConsoleRecommender(world.describe_track, world.n_tracks)
    if isinstance(agent, str):
        raise ValueError(f"unknown agent {agent!r}; choose one of {AGENTS} or pass a recommender object")
    if is_process_factory(agent):
        return agent.for_process(process, clock)
    if not callable(getattr(agent, "recommend", None)):
        raise TypeError("an in-process recommender needs a recommend(user, track, time) method")
    return agent


def is_process_factory(agent) -> bool:
    """Whether `agent` makes a recommender per simulation process (`for_process`) rather than being one."""
    return callable(getattr(agent, "for_process", None))


def answers_in_batches(agent) -> bool:
    """Whether the lock-step engine can serve this agent: it needs a batch method and no per-session calls."""
    if agent == "random":
        return True
    return not isinstance(agent, str) and hasattr(agent, "recommend_batch") and not hasattr(agent, "end_session")
