"""The server answers well-formed /next and /last straight from the Service; the answer, the log and the counters
must be exactly the Flask app's, for valid requests and for every way a request can be wrong."""

from __future__ import annotations

import dataclasses
import itertools
import random

import orjson
import pytest

from botify.eventlog import LogUnavailable
from botify.server import FlaskOverRSGI


class Headers:
    """granian's RSGI headers: lower-case names, `get` gives the first value, `get_all` every one."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = [(name.lower(), value) for name, value in pairs]

    def get(self, name: str, default=None):
        return next((value for key, value in self.pairs if key == name), default)

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]

    def items(self):
        return list(self.pairs)

    def __contains__(self, name: str) -> bool:
        return any(key == name for key, _ in self.pairs)


@dataclasses.dataclass
class Scope:
    method: str
    path: str
    headers: Headers
    query_string: str = ""
    server: str = "127.0.0.1:5000"
    client: str = "127.0.0.1:40000"
    scheme: str = "http"
    http_version: str = "1.1"


def requests_to_compare(seed: int) -> list[tuple[str, str, bytes, list]]:
    """(method, path, body, headers): valid events and each kind of wrong one, in a seeded order."""
    rng = random.Random(seed)
    bodies = [
        b'{"track": 3, "time": 0.5}',
        b'{"track": 0, "time": 1}',
        b'{"track": 499, "time": 0.0}',
        b'{"track": 500, "time": 0.5}',
        b'{"track": -1, "time": 0.5}',
        b'{"track": 3, "time": 1.5}',
        b'{"track": 3, "time": NaN}',
        b'{"track": "3", "time": 0.5}',
        b'{"track": 3.0, "time": 0.5}',
        b'{"track": true, "time": 0.5}',
        b'{"track": 3}',
        b'{"time": 0.5}',
        b"[3, 0.5]",
        b"not json",
        b"",
        b'{"track": 3, "time": 0.5, "extra": [1, 2]}',
        b'{"track": 3, "time": 0.5}' + b" " * 5000,
    ]
    users = ["5", "0", "007", "2147483647", "2147483648", "12345678901", "x", "-1"]
    clocks = [[("X-Botify-Time", "1700000000000")], [], [("X-Botify-Time", "soon")], [("X-Botify-Time", "-5")]]
    clocks += [[("X-Botify-Time", "1700000000000"), ("X-Botify-Time", "1700000000001")]]
    cases = [
        ("POST", f"/{endpoint}/{user}", body, clock)
        for endpoint, user, body, clock in itertools.product(["next", "last"], users, bodies, clocks)
    ]
    cases += [("GET", "/next/5", bodies[0], clocks[0]), ("POST", "/next/5/", bodies[0], clocks[0])]
    cases += [("POST", "/next", bodies[0], clocks[0]), ("PUT", "/last/5", bodies[0], clocks[0])]
    rng.shuffle(cases)
    return cases


def answer_next(adapter: FlaskOverRSGI, *, fast: bool) -> tuple[int, list, bytes]:
    """A well-formed POST /next/5 answered by the fast path or by the Flask app: (status, headers, payload)."""
    body = b'{"track": 3, "time": 0.5}'
    scope = Scope("POST", "/next/5", Headers([("Content-Length", str(len(body)))]))
    if fast:
        return adapter._answer(scope, body, str(len(body)))
    status, headers, payload = adapter._call_app(adapter._environ(scope, body, str(len(body))))
    return int(status[:3]), headers, payload


@pytest.mark.parametrize("clock", ["simulated", "wall"])
def test_the_fast_path_answers_and_logs_as_the_app_does(write_config, world, open_app, tmp_path, clock):
    answers = {}
    for path in ("fast", "app"):
        config = write_config([world.top_pop_experiment()], name=f"{path}.yaml", log_dir=path, clock=clock)
        adapter = FlaskOverRSGI(open_app(config))
        answered = []
        for method, url, body, headers in requests_to_compare(seed=3):
            scope = Scope(method, url, Headers(headers + [("Content-Length", str(len(body)))]))
            if path == "fast":
                answered.append(adapter._answer(scope, body, str(len(body))))
            else:
                status, response_headers, payload = adapter._call_app(adapter._environ(scope, body, str(len(body))))
                answered.append((int(status[:3]), response_headers, payload))
        adapter.service.close()
        answers[path] = answered
    assert answers["fast"] == answers["app"]
    statuses = {status for status, _, _ in answers["app"]}
    assert {200, 400, 404, 405, 413} <= statuses, statuses  # every kind of answer was compared
    fast_log, app_log = [(tmp_path / path / "data.json").read_bytes().splitlines() for path in ("fast", "app")]
    assert len(fast_log) == len(app_log) == sum(status == 200 for status, _, _ in answers["app"]) > 20
    if clock == "simulated":
        assert fast_log == app_log
    else:  # the wall clock stamps each line with its own time and latency; everything else is the same
        strip = [
            {k: v for k, v in orjson.loads(line).items() if k not in ("timestamp", "latency")} for line in fast_log
        ]
        assert strip == [
            {k: v for k, v in orjson.loads(line).items() if k not in ("timestamp", "latency")} for line in app_log
        ]
    counters = [orjson.loads((tmp_path / path / ".botify-counters.json").read_bytes()) for path in ("fast", "app")]
    assert counters[0] == counters[1]


def test_a_service_that_cannot_log_answers_503_with_retry_after_on_both_paths(
    write_config, world, open_app, monkeypatch
):
    answers = []
    for path in ("fast", "app"):
        adapter = FlaskOverRSGI(open_app(write_config([world.top_pop_experiment()], name=f"{path}.yaml", log_dir=path)))

        def refuse(event):
            raise LogUnavailable("No space left on device")

        monkeypatch.setattr(adapter.service.event_log, "write", refuse)
        answers.append(answer_next(adapter, fast=path == "fast"))
    assert answers[0] == answers[1] and answers[0][0] == 503 and ("Retry-After", "1") in answers[0][1]
    assert b"No space left on device" in answers[0][2]


def test_a_failing_custom_recommender_answers_the_same_500_on_both_paths(write_config, open_app, tmp_path):
    (tmp_path / "failing.py").write_text(
        "class Failing:\n    def recommend_next(self, user, prev_track, prev_track_time):\n        raise KeyError(7)\n"
    )
    answers = []
    for path in ("fast", "app"):
        experiment = {"name": "HOMEWORK", "arms": [{"recommender": "failing.py:Failing"}]}
        adapter = FlaskOverRSGI(open_app(write_config([experiment], name=f"{path}.yaml", log_dir=path)))
        answers.append(answer_next(adapter, fast=path == "fast"))
    assert answers[0] == answers[1]
    assert answers[0][0] == 500
    assert orjson.loads(answers[0][2]) == {"error": "recommender failing.py:Failing (arm C) raised KeyError: 7"}
