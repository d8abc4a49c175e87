"""Every endpoint and every recommender through the app's test client (the exploring wrapper also draw by draw),
and what only the real server does (HTTP framing, chunked and stalled bodies) over real HTTP against
`python -m botify serve`."""

import dataclasses
import socket
from urllib.parse import urlparse

import numpy as np
import orjson
import pytest
import requests

from botify import create_app
from botify.catalog import load_catalog
from botify.config import ArmConfig
from botify.launch import served
from botify.recommenders import Exploring, Random, TopPop, build_recommender


def write_api_config(world, folder):
    config = folder / "botify.yaml"
    config.write_text(
        orjson.dumps(
            {
                "catalog": str(world.path / "tracks.json"),
                "log_dir": "log",
                "seed": 3,
                "experiments": [
                    world.top_pop_experiment(),
                    {"name": "SHADOW", "arms": [{"recommender": "random"}, {"recommender": "sticky_artist"}]},
                ],
            }
        ).decode()  # JSON is YAML
    )
    return config


class ClientSession:
    """The test client behind the few `requests`-like calls these tests make (post/get on paths)."""

    def __init__(self, client):
        self.client = client

    def get(self, path: str):
        return Answer(self.client.get(path))

    def post(self, path: str, json=None, data=None):
        return Answer(self.client.post(path, json=json, data=data))


class Answer:
    def __init__(self, response):
        self.status_code = response.status_code
        self.headers = response.headers
        self._response = response

    def json(self):
        return self._response.get_json()


@pytest.fixture(scope="module")
def top_pop_app(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("api_app")
    app = create_app(write_api_config(world, folder))
    try:
        yield ClientSession(app.test_client()), folder / "log"
    finally:
        app.extensions["botify"].close()


@pytest.fixture(scope="module")
def top_pop_service(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    with served(write_api_config(world, folder)) as url:
        yield url, folder / "log"


def test_alive_over_http(top_pop_service):
    url, _ = top_pop_service
    answer = requests.get(f"{url}/")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    assert answer.json()["status"] == "alive"


def test_track_rows_and_unknown_ids(top_pop_app, world):
    client, _ = top_pop_app
    assert client.get("/track/42").json() == {"artist": world.artist_of(42), "title": "title 42", "track": 42}
    for missing in (world.n_tracks, -1, "abc", 10**30):
        answer = client.get(f"/track/{missing}")
        assert answer.status_code == 404 and "error" in answer.json()


def test_experiments_lists_arms_and_what_serves(top_pop_app):
    client, _ = top_pop_app
    experiments = client.get("/experiments").json()["experiments"]
    assert [(e["name"], e["serves_next"]) for e in experiments] == [("TOP_POP", True), ("SHADOW", False)]
    assert [(arm["name"], arm["recommender"], arm.get("k")) for arm in experiments[0]["arms"]] == [
        ("C", "random", None),
        ("T1", "toppop", 1),
        ("T2", "toppop", 3),
        ("T3", "toppop", 6),
    ]


def test_next_and_last_answer_and_log_one_line_each(top_pop_app, world, events):
    client, log_dir = top_pop_app
    before = len(events(log_dir))
    next_answer = client.post("/next/5533", json={"track": 9, "time": 0.25})
    last_answer = client.post("/last/5533", json={"track": 9, "time": 1})
    assert next_answer.status_code == 200 and last_answer.status_code == 200
    recommended = next_answer.json()["track"]
    assert next_answer.json() == {"user": 5533, "track": recommended} and 0 <= recommended < world.n_tracks
    assert last_answer.json() == {"user": 5533}
    next_event, last_event = events(log_dir)[before:]
    assert next_event["message"] == "next" and next_event["recommendation"] == recommended
    assert (next_event["user"], next_event["track"], next_event["time"]) == (5533, 9, 0.25)
    assert type(next_event["timestamp"]) is int and next_event["timestamp"] > 1_600_000_000_000
    assert 0 < next_event["latency"] < 1
    assert last_event["message"] == "last" and last_event["recommendation"] is None and last_event["time"] == 1.0
    assert set(next_event["experiments"]) == {"TOP_POP", "SHADOW"}


def test_assignment_vectors_reach_the_log_and_choose_the_recommender(top_pop_app, world, events):
    """The course's published assignment vectors: TOP_POP with 4 arms puts user 5533 in C and user 7121 in T3."""
    client, log_dir = top_pop_app
    before = len(events(log_dir))
    recommendations = {client.post("/next/7121", json={"track": 0, "time": 1.0}).json()["track"] for _ in range(30)}
    client.post("/next/5533", json={"track": 0, "time": 1.0})
    events = events(log_dir)[before:]
    assert {event["experiments"]["TOP_POP"] for event in events if event["user"] == 7121} == {"T3"}
    assert {event["experiments"]["TOP_POP"] for event in events if event["user"] == 5533} == {"C"}
    assert recommendations <= set(world.top_tracks[:6]) and len(recommendations) > 1


def test_bad_requests_get_json_4xx_and_are_not_logged(top_pop_app, world, events):
    client, log_dir = top_pop_app
    before = len(events(log_dir))
    bodies = [
        b"not json",
        b"[1, 2]",
        b"null",
        b'"text"',
        b"{}",
        b'{"track": 1}',
        b'{"time": 0.5}',
        b'{"track": "1", "time": 0.5}',
        b'{"track": 1.0, "time": 0.5}',
        b'{"track": true, "time": 0.5}',
        b'{"track": null, "time": 0.5}',
        b'{"track": 1, "time": "0.5"}',
        b'{"track": 1, "time": NaN}',
        b'{"track": 1, "time": Infinity}',
        b'{"track": 1, "time": 1e999}',
        b'{"track": 1, "time": false}',
        b'{"track": 1, "time": 1.5}',
        b'{"track": 1, "time": -0.1}',
        b'{"track": 500, "time": 0.5}',
        b'{"track": -1, "time": 0.5}',
        b'{"track": 99999999999999999999999, "time": 0.5}',
        b"\xff\xfe",
    ]
    for endpoint in ("next", "last"):
        for body in bodies:
            answer = client.post(f"/{endpoint}/1", data=body)
            assert answer.status_code == 400, body
            assert isinstance(answer.json()["error"], str)
        for user in ("-1", "2147483648", "1e3", "abc", "%D9%A3", "1_0"):
            answer = client.post(f"/{endpoint}/{user}", json={"track": 1, "time": 0.5})
            assert answer.status_code == 400 and "error" in answer.json(), user
    oversized = client.post("/next/1", data=b'{"track": 1, "time": 0.5, "pad": "' + b"x" * 100_000 + b'"}')
    assert oversized.status_code == 413 and "error" in oversized.json()
    unknown = client.get("/no/such/route")
    assert unknown.status_code == 404 and "error" in unknown.json()
    wrong_method = client.get("/next/1")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    assert len(events(log_dir)) == before
    assert client.post("/next/2147483647", json={"track": 499, "time": 0}).status_code == 200


def test_user_paths_are_decoded_and_checked_over_http(top_pop_service):
    """granian percent-decodes the path; a non-ASCII digit user is still refused, a long digit run gets 400/404."""
    url, _ = top_pop_service
    with requests.Session() as session:
        for user in ("%D9%A3", "1" * 5000, "%2F1"):
            answer = session.post(f"{url}/next/{user}", json={"track": 1, "time": 0.5})
            assert answer.status_code in (400, 404) and "error" in answer.json(), user
        assert session.get(f"{url}/track/{'7' * 4301}").status_code == 404


def test_chunked_bodies_are_read_and_oversized_ones_get_413(top_pop_service, events):
    url, log_dir = top_pop_service
    before = len(events(log_dir))
    small = requests.post(f"{url}/next/3", data=iter([b'{"track": 4, ', b'"time": 0.5}']))  # iterator: chunked
    assert small.request.headers["Transfer-Encoding"] == "chunked" and small.status_code == 200
    oversized = requests.post(
        f"{url}/next/3", data=iter([b'{"track": 4, "time": 0.5, "pad": "', b"x" * 100_000, b'"}'])
    )
    assert oversized.status_code == 413 and "error" in oversized.json()
    assert [event["user"] for event in events(log_dir)[before:]] == [3]


def test_a_client_stalled_mid_body_does_not_hold_up_others(top_pop_service, events):
    """One worker serves everyone, so a body that never finishes arriving must not block it (slowloris)."""
    url, log_dir = top_pop_service
    address = urlparse(url)
    before = len(events(log_dir))
    stalled = []
    for framing in (b"Content-Length: 40", b"Transfer-Encoding: chunked"):
        sock = socket.create_connection((address.hostname, address.port))
        sock.sendall(
            b"POST /next/9 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s\r\n\r\n" % framing
            + (b"5\r\n" if b"chunked" in framing else b"")
            + b'{"tra'
        )
        stalled.append(sock)
    try:
        with requests.Session() as session:
            for _ in range(20):
                assert session.post(f"{url}/next/10", json={"track": 1, "time": 0.5}, timeout=5).status_code == 200
    finally:
        for sock in stalled:
            sock.close()
    assert {event["user"] for event in events(log_dir)[before:]} == {10}


@pytest.fixture
def single_recommender(write_config, open_app):
    """A test client for a config whose only experiment gives every user the same recommender."""

    def client_for(arm: dict):
        return open_app(write_config([{"name": "ONLY", "arms": [arm, {**arm, "name": "T1"}]}])).test_client()

    return client_for


def recommendations_for(client, user: int, track: int, count: int = 40) -> list[int]:
    return [client.post(f"/next/{user}", json={"track": track, "time": 0.5}).get_json()["track"] for _ in range(count)]


def test_random_recommender_spreads_over_the_catalog(single_recommender, world):
    client = single_recommender({"recommender": "random"})
    recommendations = recommendations_for(client, 1, 0, count=200)
    assert all(0 <= track < world.n_tracks for track in recommendations)
    assert len(set(recommendations)) > 150


def test_toppop_stays_within_the_k_most_popular(single_recommender, world):
    client = single_recommender({"recommender": "toppop", "path": str(world.path / "top_tracks.json"), "k": 3})
    assert set(recommendations_for(client, 1, 0)) == set(world.top_tracks[:3])


def test_sticky_artist_keeps_the_last_tracks_artist(single_recommender, world):
    client = single_recommender({"recommender": "sticky_artist"})
    recommendations = recommendations_for(client, 1, 17)
    assert {world.artist_of(track) for track in recommendations} == {world.artist_of(17)}
    assert len(set(recommendations)) > 3


def test_indexed_uses_the_users_list_and_falls_back_to_random(single_recommender, world):
    client = single_recommender({"recommender": "indexed", "path": str(world.path / "user_recs.json")})
    assert set(recommendations_for(client, 5, 0)) == set(world.indexed_users[5])
    assert set(recommendations_for(client, 6, 0)) == set(world.indexed_users[6])
    assert len(set(recommendations_for(client, 77, 0))) > 20


def test_contextual_uses_the_last_tracks_neighbours_and_falls_back_to_random(single_recommender, world):
    client = single_recommender({"recommender": "contextual", "path": str(world.path / "recs.json")})
    assert set(recommendations_for(client, 1, 0)) == set(world.context_neighbours[0])
    assert set(recommendations_for(client, 1, 1)) == set(world.context_neighbours[1])
    assert len(set(recommendations_for(client, 1, 2))) > 20  # empty list
    assert len(set(recommendations_for(client, 1, 3))) > 20  # no row at all


def uniform_128_bit_draws(count: int, seed: int) -> list[int]:
    """Draws like the service's (an unsigned 128-bit hash), from two uniform 64-bit halves."""
    halves = np.random.default_rng(seed).integers(0, 2**64, size=(count, 2), dtype=np.uint64)
    return [(int(high) << 64) | int(low) for high, low in halves]


def test_an_exploring_arm_answers_its_share_with_random_and_otherwise_its_own(world):
    catalog = load_catalog(world.path / "tracks.json")
    arm = ArmConfig("T1", "toppop", path=world.path / "top_tracks.json", k=3)
    own = build_recommender(arm, catalog)
    exploring = build_recommender(dataclasses.replace(arm, exploration=0.25), catalog)
    assert type(own) is TopPop and type(exploring) is Exploring
    random = Random(catalog)
    draws = uniform_128_bit_draws(20_000, seed=11)
    answers = [exploring.recommend(1, 0, draw) for draw in draws]
    explored = [(draw >> 64) < 2**62 for draw in draws]  # the high 64 bits below a quarter of their range
    assert answers == [(random if explores else own).recommend(1, 0, draw) for draw, explores in zip(draws, explored)]
    # 25% of 20,000 is 5,000 with a binomial standard deviation of 61: allow 4 of them.
    assert abs(sum(explored) - 5_000) < 245
    # Seen from outside: Random leaves the top 3 in 497 of 500 picks, TopPop(3) never does (mean 4,970, sd 61).
    assert abs(sum(answer not in world.top_tracks[:3] for answer in answers) - 4_970) < 245


def propensity_cases(world, tmp_path) -> list[tuple[str, object, int, int]]:
    """(label, recommender, user, track): every kind, its fallback, a list naming a track twice, exploration."""
    catalog = load_catalog(world.path / "tracks.json")
    repeats = tmp_path / "repeats.json"
    repeats.write_bytes(orjson.dumps({"track": 4, "recommendations": [9, 9, 12]}) + b"\n")
    top = world.path / "top_tracks.json"

    def build(recommender: str, **arm) -> object:
        return build_recommender(ArmConfig("T1", recommender, **arm), catalog)

    contextual = build("contextual", path=world.path / "recs.json")
    return [
        ("random", build("random"), 1, 0),
        ("toppop", build("toppop", path=top, k=3), 1, 0),
        ("sticky_artist", build("sticky_artist"), 1, 7),
        ("indexed", build("indexed", path=world.path / "user_recs.json"), 5, 0),
        ("indexed, unknown user: Random", build("indexed", path=world.path / "user_recs.json"), 77, 0),
        ("contextual", contextual, 1, 0),
        ("contextual, empty list: Random", contextual, 1, 2),
        ("contextual, a track listed twice", build("contextual", path=repeats), 1, 4),
        ("exploring contextual", build("contextual", path=world.path / "recs.json", exploration=0.3), 1, 0),
    ]


def test_every_recommender_knows_the_probability_of_what_it_serves(world, tmp_path):
    """distribution() sums to 1 and propensity() of a served track is its probability in it; over 20,000 draws each
    track is served at that probability (within 4 binomial standard deviations)."""
    draws = uniform_128_bit_draws(20_000, seed=5)
    for label, recommender, user, track in propensity_cases(world, tmp_path):
        distribution = recommender.distribution(user, track)
        assert sum(distribution.values()) == pytest.approx(1.0), label
        served = [recommender.recommend(user, track, draw) for draw in draws]
        counts = dict(zip(*np.unique(served, return_counts=True)))
        assert set(counts) <= set(distribution), label
        for candidate, probability in distribution.items():
            assert recommender.propensity(user, track, candidate) == pytest.approx(probability), (label, candidate)
            expected, sd = len(draws) * probability, (len(draws) * probability * (1 - probability)) ** 0.5
            assert abs(counts.get(candidate, 0) - expected) <= 4 * sd + 1, (label, candidate)
    explored = dict((label, recommender) for label, recommender, _, _ in propensity_cases(world, tmp_path))
    # 30% Random over 500 tracks, 70% one of the 3 neighbours of track 0; a listed track twice in three
    assert explored["exploring contextual"].propensity(1, 0, 10) == pytest.approx(0.3 / 500 + 0.7 / 3)
    assert explored["exploring contextual"].propensity(1, 0, 11) == pytest.approx(0.3 / 500)
    assert explored["contextual, a track listed twice"].propensity(1, 4, 9) == pytest.approx(2 / 3)


def test_an_exploring_arm_is_served_and_described(single_recommender, world):
    client = single_recommender(
        {"recommender": "toppop", "path": str(world.path / "top_tracks.json"), "k": 1, "exploration": 0.25}
    )
    arms = client.get("/experiments").get_json()["experiments"][0]["arms"]
    assert [(arm["name"], arm["k"], arm["exploration"]) for arm in arms] == [("C", 1, 0.25), ("T1", 1, 0.25)]
    recommendations = recommendations_for(client, 1, 0, count=400)
    # About a quarter leaves the top track (mean 99.8, sd 8.7).
    assert 65 < sum(track != world.top_tracks[0] for track in recommendations) < 135
