"""A small world written per test session (no simulator needed), config writers, and a private redis-server."""

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import orjson
import psutil
import pytest
import redis
import yaml

from botify.launch import free_loopback_port
from botify_lab.formats import EVENT_KEYS as SCHEMA_KEYS
from botify_lab.formats import PROPENSITY_KEY, iter_json_lines, log_files

EVENT_KEYS = list(SCHEMA_KEYS)


@dataclass(frozen=True)
class SmallWorld:
    """The catalog and recommender files the tests serve, with the facts the tests check against."""

    path: Path
    n_tracks: int = 500
    n_artists: int = 50
    top_tracks: list = field(default_factory=lambda: [7, 3, 11, 400, 250, 42])
    indexed_users: dict = field(default_factory=lambda: {5: [1, 2, 3], 6: [499]})
    context_neighbours: dict = field(default_factory=lambda: {0: [10, 20, 30], 1: [5], 2: []})

    def artist_of(self, track: int) -> str:
        return f"artist {track % self.n_artists}"

    def top_pop_experiment(self) -> dict:
        """The course's TOP_POP shape (Random, then TopPop arms) scaled to this catalog."""
        top = str(self.path / "top_tracks.json")
        return {
            "name": "TOP_POP",
            "arms": [
                {"recommender": "random"},
                {"recommender": "toppop", "path": top, "k": 1},
                {"recommender": "toppop", "path": top, "k": 3},
                {"recommender": "toppop", "path": top, "k": 6},
            ],
        }

    def write(self) -> None:
        rows = [
            {"artist": self.artist_of(track), "title": f"title {track}", "track": track}
            for track in range(self.n_tracks)
        ]
        (self.path / "tracks.json").write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
        (self.path / "top_tracks.json").write_bytes(orjson.dumps(self.top_tracks))
        (self.path / "user_recs.json").write_bytes(
            b"".join(orjson.dumps({"user": u, "tracks": t}) + b"\n" for u, t in self.indexed_users.items())
        )
        (self.path / "recs.json").write_bytes(
            b"".join(
                orjson.dumps({**rows[track], "recommendations": neighbours}) + b"\n"
                for track, neighbours in self.context_neighbours.items()
            )
        )


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> SmallWorld:
    small_world = SmallWorld(tmp_path_factory.mktemp("world"))
    small_world.write()
    return small_world


@pytest.fixture
def write_config(world, tmp_path):
    """Write a YAML config into tmp_path (catalog path relative to it, log in tmp_path/log) and return its path."""

    def write(experiments: list, *, name: str = "botify.yaml", **overrides) -> Path:
        config = {
            "catalog": os.path.relpath(world.path / "tracks.json", tmp_path),
            "log_dir": "log",
            "store": "memory",
            "seed": 7,
            "experiments": experiments,
            **overrides,
        }
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def botify_supervisor(url: str) -> psutil.Process:
    """The `python -m botify serve` process (or `python -c SCRIPT serve`) this test started that serves `url`.

    Found by its listening socket, never by its place among the test's children: the session's redis-server is a
    child too, and once pids wrap around it may come last (a test once killed it instead of the service)."""
    port = urlparse(url).port

    def listens(process: psutil.Process) -> bool:
        connections = process.net_connections("tcp")
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)

    for child in psutil.Process().children():
        try:
            command = child.cmdline()
            started_by_served = command[1:4] == ["-m", "botify", "serve"] or command[1::2][:2] == ["-c", "serve"]
            if child.status() == psutil.STATUS_ZOMBIE or not started_by_served:
                continue
            if any(map(listens, [child, *child.children()])):  # granian's workers hold the socket, not the supervisor
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no botify service of this test listens on port {port}")


class RedisServer:
    """A private redis-server on a loopback port (no persistence) that a test may pause, kill and restart."""

    def __init__(self, executable: str, port: int):
        self.executable = executable
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.025)
            pytest.fail("redis-server did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


def redis_executable() -> str:
    executable = shutil.which("redis-server")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required on CI")
        pytest.skip("redis-server not installed")
    return executable


@pytest.fixture
def own_redis():
    """A function-scoped RedisServer, always stopped at the end."""
    server = RedisServer(redis_executable(), free_loopback_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url():
    """A private redis-server on a free loopback port with no persistence; skipped when missing, except on CI."""
    executable = shutil.which("redis-server")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is required on CI")
        pytest.skip("redis-server not installed")
    port = free_loopback_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.025)
        else:
            pytest.fail("redis-server did not start")
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(10)


def read_events(log_dir: Path) -> list[dict]:
    """Every logged event in writing order; a torn (partial) line anywhere fails the test."""
    logged = []
    for path in log_files(log_dir):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path} ends with a partial line"
        logged.extend(row for _, row in iter_json_lines(path))
    return logged


@pytest.fixture
def events():
    """Read a log folder, checking every line has exactly the schema's keys in order (a "next" line's propensity
    last), and that each propensity is a probability."""

    def read(log_dir: Path) -> list[dict]:
        logged = read_events(log_dir)
        for event in logged:
            assert list(event) == (EVENT_KEYS + [PROPENSITY_KEY] if event["message"] == "next" else EVENT_KEYS)
            assert event["message"] == "last" or 0 < event[PROPENSITY_KEY] <= 1
        return logged

    return read


@pytest.fixture
def open_app():
    """create_app for the Flask test client; every app's Service is closed (its log folder released) at the end."""
    from botify import create_app

    apps = []

    def make(config, **options):
        app = create_app(config, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["botify"].close()
