"""Property test: thousands of malformed requests at the real server never get a 5xx or a log line, while the well
formed ones mixed in get a 200 and exactly one line each (each example compares the log before and after its own
request, so the tests hold in any order and whatever ran before on the module's service)."""

import json
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from botify.launch import served

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
odd_tracks = st.one_of(json_values, st.integers(max_value=-1), st.integers(min_value=500), st.floats())
odd_times = st.one_of(json_values, st.floats(allow_nan=True, allow_infinity=True), st.integers())


def literal(value) -> bytes:
    """JSON text as a lenient client writes it: NaN/Infinity spelled out, integers of any size."""
    return json.dumps(value).encode()


@st.composite
def bodies(draw) -> bytes:
    """Mostly malformed bodies; a quarter well formed, so that accepted requests (and their log lines) are checked too
    (the odd ones alone almost never make a valid request: 1,500 examples had logged nothing)."""
    kind = draw(st.sampled_from(["bytes", "value", "fields", "valid"]))
    if kind == "valid":
        track, time = draw(st.integers(0, 499)), draw(st.floats(0, 1) | st.integers(0, 1))
        return orjson.dumps({"track": track, "time": time})
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    if kind == "value":
        return literal(draw(json_values))
    fields = {}
    if draw(st.booleans()):
        fields["track"] = literal(draw(odd_tracks))
    if draw(st.booleans()):
        fields["time"] = literal(draw(odd_times))
    return b"{" + b", ".join(b'"' + key.encode() + b'": ' + value for key, value in fields.items()) + b"}"


def is_valid(user: str, body: bytes) -> bool:
    if not (user.isascii() and user.isdigit() and len(user) <= 10 and int(user) <= 2**31 - 1):
        return False
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(parsed, dict)
        and type(parsed.get("track")) is int
        and 0 <= parsed["track"] < 500
        and type(parsed.get("time")) in (int, float)
        and 0 <= parsed["time"] <= 1
    )


@pytest.fixture(scope="module")
def fuzzed_service(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    config = folder / "botify.yaml"
    config.write_text(
        orjson.dumps(
            {"catalog": str(world.path / "tracks.json"), "log_dir": "log", "experiments": [world.top_pop_experiment()]}
        ).decode()
    )
    with served(config) as url, requests.Session() as session:
        yield url, session, folder / "log" / "data.json"


def logged_lines(log: Path) -> int:
    return log.read_bytes().count(b"\n") if log.exists() else 0


users = st.one_of(
    st.integers(min_value=-10, max_value=2**40).map(str),
    st.integers(min_value=0, max_value=2**31 - 1).map(str),  # valid ids, rare among the others
    st.text(min_size=1, max_size=12),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(endpoint="next", user="5", body=b'{"track": 1, "time": 0.5}')  # one accepted request in every run
@given(endpoint=st.sampled_from(["next", "last"]), user=users, body=bodies())
def test_malformed_posts_get_4xx_json_and_only_accepted_ones_are_logged(fuzzed_service, endpoint, user, body):
    url, session, log = fuzzed_service
    before = logged_lines(log)
    answer = session.post(f"{url}/{endpoint}/{quote(user, safe='')}", data=body)
    assert answer.status_code < 500
    assert answer.headers["Content-Type"] == "application/json"
    if answer.status_code != 200:
        assert isinstance(answer.json()["error"], str)
    # The line is written before the answer is sent, so it is in the log now; refusals add none.
    assert logged_lines(log) - before == (answer.status_code == 200)
    if user not in (".", ".."):  # the client resolves dot segments before sending
        assert (answer.status_code == 200) == is_valid(user, body), (answer.status_code, answer.text)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]), path=st.text(max_size=30))
def test_arbitrary_paths_and_methods_get_json_without_5xx(fuzzed_service, method, path):
    url, session, _ = fuzzed_service
    answer = session.request(method, f"{url}/{quote(path, safe='/')}", data=b"{}")
    assert answer.status_code < 500
    assert answer.headers["Content-Type"] == "application/json"
