"""Small worlds and a real loopback HTTP recommender for the simulator's tests."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from sim.generator import generate_world
from sim.settings import KNOBS

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
# The structure knobs of the default world (params.yaml), at a small size.
DEFAULT_KNOBS = {name: value for name, value in yaml.safe_load(PARAMS.read_text())["world"].items() if name in KNOBS}
SMALL = dict(seed=1, n_tracks=2000, n_users=200, dim=16, **DEFAULT_KNOBS)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("small-world")
    generate_world(directory, **SMALL)
    return directory


def write_world(directory: Path, artists: list[str], embeddings, users: list[dict]) -> Path:
    """A hand-made world in the course's formats (no world.json), for hand-computed cases."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "tracks.json", "wb") as handle:
        for track, artist in enumerate(artists):
            handle.write(orjson.dumps({"artist": artist, "title": f"song {track}", "track": track}) + b"\n")
    with open(directory / "users.json", "wb") as handle:
        for user in users:
            handle.write(orjson.dumps(user) + b"\n")
    np.save(directory / "tracks.npy", np.asarray(embeddings, dtype=np.float32))
    return directory


class FakeRecommender:
    """A real HTTP/1.1 keep-alive server on loopback whose answers the test controls.

    `answer(user, track, time)` returns the JSON body of /next (a dict), or an int HTTP status to fail with.
    Every request is recorded in order, with the connection it came on. With `split_writes` the answer's headers
    and body leave in two writes with Nagle's algorithm on, as the course's gevent botify sends them.
    """

    def __init__(self, port: int, answer, *, split_writes: bool = False):
        self.answer = answer
        self.requests: list[tuple[str, int, dict, int]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Otherwise delayed ACKs stall every keep-alive answer by ~40 ms (unless the client acknowledges at once).
            disable_nagle_algorithm = not split_writes
            wbufsize = 1 << 16  # headers and body leave in one write; the handler flushes after each request

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                kind, user = self.path.strip("/").split("/")
                with fake.lock:
                    fake.requests.append((kind, int(user), body, id(self.connection)))
                if kind == "next":
                    result = fake.answer(int(user), body["track"], body["time"])
                else:
                    result = {"user": int(user)}
                if isinstance(result, int):
                    payload, status = b"boom", result
                else:
                    payload, status = orjson.dumps(result), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if split_writes:
                    self.wfile.flush()
                try:
                    self.wfile.write(payload)
                    self.wfile.flush()
                except BrokenPipeError:  # the client gave up (timeout tests)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_recommender(loopback_port):
    servers = []

    def start(answer, **options):
        server = FakeRecommender(loopback_port, answer, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
