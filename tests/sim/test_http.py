"""The HTTP agent against a real loopback server: protocol, keep-alive, concurrency rules, failures."""

from __future__ import annotations

import socketserver
import threading
import time

import numpy as np
import pytest

from sim.agents import HttpRecommender, InvalidAnswer, ServiceUnavailable
from sim.run import simulate

from .conftest import write_world


@pytest.fixture(scope="module")
def crowded_world(tmp_path_factory):
    """Four users only, so concurrent sessions would collide on users if the scheduler let them."""
    generator = np.random.default_rng(4)
    users = [
        {"user": u, "interests": [u, u + 10, u + 20], "consume_bias": 1.0, "consume_sharpness": 1.0} for u in range(4)
    ]
    return write_world(
        tmp_path_factory.mktemp("crowded"),
        [f"artist {i % 17}" for i in range(60)],
        generator.normal(0, 0.8, (60, 6)),
        users,
    )


def arithmetic(n_tracks):
    return lambda user, track, time: {"user": user, "track": (track * 31 + user) % n_tracks}


def test_protocol_over_one_keep_alive_connection(fake_recommender, small_world):
    server = fake_recommender(arithmetic(2000))
    summary = simulate(small_world, agent="http", url=server.url, episodes=25, seed=4, connections=1, progress=False)
    nexts = [r for r in server.requests if r[0] == "next"]
    lasts = [r for r in server.requests if r[0] == "last"]
    assert len(nexts) == summary["total"]["steps"] and len(lasts) == 25
    assert all(set(body) == {"track", "time"} for _, _, body, _ in server.requests)
    assert nexts[0][2]["time"] == 1.0
    assert len({connection for *_, connection in server.requests}) == 1
    assert summary["invalid_answers"] == 0 and summary["connections"] == 1


def test_concurrent_sessions_never_share_a_user_and_traces_ignore_concurrency(
    fake_recommender, crowded_world, tmp_path
):
    server = fake_recommender(arithmetic(60))
    simulate(
        crowded_world,
        agent="http",
        url=server.url,
        episodes=40,
        seed=8,
        connections=1,
        trace_path=tmp_path / "one.jsonl",
        progress=False,
    )
    server.requests.clear()
    simulate(
        crowded_world,
        agent="http",
        url=server.url,
        episodes=40,
        days=2,
        seed=8,
        processes=2,
        connections=6,
        trace_path=tmp_path / "many.jsonl",
        progress=False,
    )
    one = (tmp_path / "one.jsonl").read_bytes()
    assert (tmp_path / "many.jsonl").read_bytes()[: len(one)] == one
    # Per user, every request continues the previous one (a /next's answer is the next request's track) and a
    # new session starts only after /last: interleaved sessions of one user would break this chain.
    expected: dict[int, int | None] = {}
    for kind, user, body, _ in server.requests:
        if user in expected and expected[user] is not None:
            assert body["track"] == expected[user]
        else:
            assert kind == "next" and body["time"] == 1.0
        expected[user] = (body["track"] * 31 + user) % 60 if kind == "next" else None


def test_bad_answers_are_invalid_and_strict_stops(fake_recommender, small_world):
    answers = iter([{"track": "7"}, {"track": 2000}, {"user": 1}, 404, {"track": 3.0}])

    def sometimes_wrong(user, track, time):
        return next(answers, {"user": user, "track": (track + 1) % 2000})

    server = fake_recommender(sometimes_wrong)
    summary = simulate(small_world, agent="http", url=server.url, episodes=10, seed=1, connections=1, progress=False)
    assert summary["invalid_answers"] == 5
    server.answer = lambda user, track, time: {"track": -3}
    with pytest.raises(InvalidAnswer, match="outside the catalog"):
        simulate(small_world, agent="http", url=server.url, episodes=10, seed=1, strict=True, progress=False)


def test_transient_answers_are_retried_a_bounded_number_of_times_and_a_failed_request_is_not(fake_recommender):
    server = fake_recommender(lambda user, track, time: 503)
    agent = HttpRecommender(server.url, retries=2, backoff=0.01)
    with pytest.raises(InvalidAnswer, match="HTTP 503"):
        agent.recommend(1, 2, 1.0)
    assert len(server.requests) == 3
    server.requests.clear()
    server.answer = lambda user, track, time: 500  # the recommender raised: asked again, it would fail again
    with pytest.raises(InvalidAnswer, match="HTTP 500"):
        agent.recommend(1, 2, 1.0)
    assert len(server.requests) == 1


def test_a_service_that_is_down_fails_clearly_within_seconds(small_world, loopback_port):
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match=f"127.0.0.1:{loopback_port}.*unreachable"):
        simulate(small_world, agent="http", url=f"http://127.0.0.1:{loopback_port}", episodes=5, seed=1, progress=False)
    assert time.monotonic() - started < 5


def test_a_hanging_service_times_out(fake_recommender):
    server = fake_recommender(lambda user, track, time: time_sleep_then({"track": 1}))
    agent = HttpRecommender(server.url, timeout=0.2, retries=1, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        agent.recommend(1, 2, 1.0)
    assert time.monotonic() - started < 2


def time_sleep_then(answer, seconds=1.0):
    time.sleep(seconds)
    return answer


def test_a_server_that_writes_headers_and_body_apart_costs_no_delayed_ack(fake_recommender):
    """The course's gevent botify sends an answer's headers and body in two writes. With Nagle on the server and
    the client's delayed ACK, every request on a reused connection then waited ~40 ms; the agent ACKs at once."""
    server = fake_recommender(lambda user, track, time: {"user": user, "track": 7}, split_writes=True)
    agent = HttpRecommender(server.url)
    started = time.perf_counter()
    tracks = [agent.recommend(1, 3, 0.5) for _ in range(40)]
    elapsed = time.perf_counter() - started
    agent.close()
    assert tracks == [7] * 40 and len(server.requests) == 40
    assert len({connection for *_, connection in server.requests}) == 1  # one kept-alive connection
    assert elapsed < 0.8, f"40 requests took {elapsed:.2f} s: the delayed-ACK stall (~40 ms each) is back"


class ScriptedAnswers(socketserver.StreamRequestHandler):
    """Reads one request at a time and writes the next scripted answer's raw bytes (a server's every way of framing
    an answer, and garbage); the connection closes after an answer that says `Connection: close`."""

    answers: list[bytes] = []
    connections = 0

    def handle(self) -> None:
        type(self).connections += 1
        while True:
            length = 0
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not line or not self.answers:
                return
            self.rfile.read(length)
            answer = self.answers.pop(0)
            self.wfile.write(answer)
            if b"connection: close" in answer.lower():
                return


@pytest.fixture
def scripted_server(loopback_port):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", loopback_port), ScriptedAnswers)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    ScriptedAnswers.answers, ScriptedAnswers.connections = [], 0
    yield f"http://127.0.0.1:{loopback_port}"
    server.shutdown()
    server.server_close()


def test_answers_framed_every_way_a_server_may_frame_them(scripted_server):
    """Content-Length, chunked, HTTP/1.0 and `Connection: close` answers are read whole; the agent reconnects only
    after an answer that closed its connection."""
    ScriptedAnswers.answers = [
        b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"track":1}',
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"tra\r\n6\r\nck":2}\r\n0\r\n\r\n',
        b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{"track":3}',
        b'HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n{"track":4}',
        b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"track":5}',
    ]
    agent = HttpRecommender(scripted_server, retries=0)
    assert [agent.recommend(1, 2, 0.5) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert ScriptedAnswers.connections == 3  # the first three answers on one, the HTTP/1.0 one alone, the last
    agent.close()


def test_a_garbled_or_cut_answer_is_retried_then_reported(scripted_server):
    ScriptedAnswers.answers = [
        b"HTTP/1.1 2x0 NOPE\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"track":9}',
    ]
    agent = HttpRecommender(scripted_server, retries=1, backoff=0.01)
    assert agent.recommend(1, 2, 0.5) == 9
    ScriptedAnswers.answers = [b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\nConnection: close\r\n\r\n{"tr'] * 2
    with pytest.raises(ServiceUnavailable, match="unreachable after 2 tries.*closed the connection"):
        agent.recommend(1, 2, 0.5)
