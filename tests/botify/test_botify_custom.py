"""Recommenders of one's own, served from config by the real service (HTTP and in process): the students' examples,
a class written as for the course's botify, sessions kept across restarts (memory and Redis), failures."""

import os
import re
import signal
import subprocess
import sys

import orjson
import psutil
import pytest
import requests

from botify.config import ConfigError
from botify.launch import served
from botify.service import FAILED_FILE_NAME, RecommenderFailed, Service
from botify.store import SESSIONS_FILE_NAME
from botify_lab.formats import PROPENSITY_KEY, event_problem
from tests.botify.conftest import botify_supervisor, read_events
from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "recommenders"
EXPERIMENT = "HOMEWORK"

# Written as a student of the course writes a recommender: a constructor and recommend_next, the global `random`.
COURSE_STYLE = """
import json
import random


class CourseContextual:
    def __init__(self, tracks_with_recs):
        self.recs = {}
        with open(tracks_with_recs) as file:
            for line in file:
                row = json.loads(line)
                self.recs[row["track"]] = row["recommendations"]

    def recommend_next(self, user, prev_track, prev_track_time):
        recommendations = self.recs.get(prev_track)
        if not recommendations:
            return random.randint(0, 499)
        return random.choice(recommendations)
"""


def custom_arm(recommender: str, **fields) -> list[dict]:
    return [{"name": EXPERIMENT, "arms": [{"recommender": recommender, **fields}]}]


def example(tmp_path, file_name: str, class_name: str) -> str:
    """An example's `recommender:` value, relative to the config's folder (tmp_path) as a student would write it."""
    return f"{os.path.relpath(EXAMPLES / file_name, tmp_path)}:{class_name}"


def post(session: requests.Session, url: str, call: str, user: int, track: int, time: float) -> requests.Response:
    return session.post(f"{url}/{call}/{user}", json={"track": track, "time": time})


def answer(session, url, user, track, time) -> int:
    response = post(session, url, "next", user, track, time)
    assert response.status_code == 200, response.text
    return response.json()["track"]


def test_first_track_contextual_follows_the_session_s_first_track(write_config, world, tmp_path):
    neighbours = world.context_neighbours
    config = write_config(
        custom_arm(
            example(tmp_path, "first_track_contextual.py", "FirstTrackContextual"),
            data={"neighbours": os.path.relpath(world.path / "recs.json", tmp_path)},  # relative to the config
        )
    )
    with served(config) as url, requests.Session() as session:
        # A session that starts at track 0 and moves on to 1 (whose own neighbour is 5): still track 0's neighbours.
        answers = [answer(session, url, 9, 0, 1.0)] + [answer(session, url, 9, 1, 0.5) for _ in range(10)]
        post(session, url, "last", 9, 1, 0.5).raise_for_status()
        # The next session starts at 1: its neighbours now.
        after = [answer(session, url, 9, 1, 1.0)] + [answer(session, url, 9, 0, 0.5) for _ in range(5)]
    assert set(answers) <= set(neighbours[0]) and len(set(answers)) > 1
    assert set(after) == set(neighbours[1])
    logged = read_events(tmp_path / "log")
    assert [event["recommendation"] for event in logged if event["message"] == "next"] == answers + after
    assert [event[PROPENSITY_KEY] for event in logged[:11]] == [1 / 3] * 11  # the class's own propensity
    assert all(event_problem(event) is None for event in logged)


def test_sticky_artist_falls_back_to_a_popular_track_after_a_skip(write_config, world, tmp_path):
    config = write_config(
        custom_arm(
            example(tmp_path, "sticky_artist_skip.py", "StickyArtistSkip"),
            params={"skip_below": 0.3, "top_k": 3},
            data={"tracks": str(world.path / "tracks.json"), "top_tracks": str(world.path / "top_tracks.json")},
        )
    )
    requests_sent = [(user, track, time) for user in range(4) for track in (1, 77, 260) for time in (0.0, 0.29, 0.3)]
    with served(config) as url, requests.Session() as session:
        answers = [answer(session, url, *request) for request in requests_sent]
    for (_, track, time), served_track in zip(requests_sent, answers):
        if time < 0.3:
            assert served_track in world.top_tracks[:3]
        else:
            assert world.artist_of(served_track) == world.artist_of(track)
    logged = read_events(tmp_path / "log")
    assert [(e["user"], e["track"], e["time"], e["recommendation"]) for e in logged] == [
        (*request, served_track) for request, served_track in zip(requests_sent, answers)
    ]
    assert not any(PROPENSITY_KEY in event for event in logged)  # no propensity given: none logged


def user_history_config(write_config, world, tmp_path, **overrides):
    return write_config(
        custom_arm(
            example(tmp_path, "user_history.py", "UserHistory"),
            data={"top_tracks": str(world.path / "top_tracks.json")},
        ),
        **overrides,
    )


def listen_to_a_liked_session(url: str, user: int) -> None:
    """One session: 100 and 200 heard to the end, then 300 skipped and the user gone."""
    with requests.Session() as session:
        for track, time in ((100, 1.0), (200, 0.9)):
            answer(session, url, user, track, time)
        post(session, url, "last", user, 300, 0.1).raise_for_status()


def test_user_history_serves_the_user_s_liked_tracks_from_earlier_sessions_across_a_restart(
    write_config, world, tmp_path
):
    config = user_history_config(write_config, world, tmp_path)
    with served(config) as url, requests.Session() as session:
        # No history yet: popular tracks not heard in this session.
        first = [answer(session, url, 4, 7, 1.0), answer(session, url, 4, 3, 1.0)]
        post(session, url, "last", 4, 3, 1.0).raise_for_status()
        listen_to_a_liked_session(url, 8)
    assert first[0] in set(world.top_tracks) - {7} and first[1] in set(world.top_tracks) - {7, 3}
    assert (tmp_path / "log" / ".botify-sessions.json").is_file()  # saved by the clean stop

    # A restarted service continues the sessions: user 8's next session gets the tracks it liked, not yet heard.
    with served(config) as url, requests.Session() as session:
        liked = [answer(session, url, 8, 400, 1.0), answer(session, url, 8, 100, 1.0)]
        post(session, url, "last", 8, 100, 1.0).raise_for_status()
    assert liked == [liked[0], 200] and liked[0] in (100, 200)

    # --reset-counters forgets them with the counters.
    with served(config, reset_counters=True) as url, requests.Session() as session:
        assert answer(session, url, 8, 400, 1.0) in world.top_tracks


def test_a_service_killed_whole_loses_no_session(write_config, world, tmp_path):
    """The memory store journals every playback, so a service killed with SIGKILL (workers too) continues its
    sessions; a worker's clean stop folds the journal into the sessions file."""
    config = user_history_config(write_config, world, tmp_path)
    log_dir = tmp_path / "log"
    with served(config) as url:
        listen_to_a_liked_session(url, 8)
        supervisor = botify_supervisor(url)
        for process in [*supervisor.children(), supervisor]:
            process.send_signal(signal.SIGKILL)
        psutil.wait_procs([supervisor], timeout=5)
    assert not (log_dir / ".botify-sessions.json").exists()
    assert len((log_dir / ".botify-sessions.journal").read_bytes().splitlines()) == 3  # one per playback
    with served(config) as url, requests.Session() as session:
        assert answer(session, url, 8, 400, 1.0) in (100, 200)
    assert not (log_dir / ".botify-sessions.journal").exists()
    saved = orjson.loads((log_dir / ".botify-sessions.json").read_bytes())["users"]["8"]
    assert saved == {"finished": [[[100, 1.0], [200, 0.9], [300, 0.1]]], "current": [[400, 1.0]]}


def test_sessions_live_in_redis_for_several_workers_and_restarts(write_config, world, tmp_path, redis_url):
    config = user_history_config(write_config, world, tmp_path, store=redis_url)
    with served(config, workers=2) as url:
        for user in range(20, 30):
            listen_to_a_liked_session(url, user)
    with served(config, workers=2) as url, requests.Session() as session:
        for user in range(20, 30):
            assert answer(session, url, user, 400, 1.0) in (100, 200)
    assert not (tmp_path / "log" / ".botify-sessions.json").exists()  # Redis holds them, not the folder


def test_a_course_style_class_runs_unchanged_and_both_transports_write_the_same_log(write_config, world, tmp_path):
    course_file = tmp_path / "homework" / "my_recommender.py"
    course_file.parent.mkdir()
    course_file.write_text(COURSE_STYLE)
    recs = str(world.path / "recs.json")
    sessions = [(user, [(0, 1.0), (1, 0.4), (2, 0.0), (0, 0.75)]) for user in (1, 2, 3, 1)]

    def config(name: str):
        return write_config(
            custom_arm("homework/my_recommender.py:CourseContextual", params={"tracks_with_recs": recs}),
            name=f"{name}.yaml",
            log_dir=name,
            clock="simulated",
        )

    def play(next_track, last_track) -> list[int]:
        answers, timestamp = [], 0
        for user, playbacks in sessions:
            for track, time in playbacks:
                timestamp += 1
                answers.append(next_track(user, track, time, timestamp))
            last_track(user, 0, 0.5, timestamp + 1)
        return answers

    def over_http(name: str) -> list[int]:
        with served(config(name)) as url, requests.Session() as session:

            def send(call, user, track, time, timestamp):
                body, clock = {"track": track, "time": time}, {"X-Botify-Time": str(timestamp)}
                response = session.post(f"{url}/{call}/{user}", json=body, headers=clock)
                response.raise_for_status()
                return response.json().get("track")

            return play(lambda *request: send("next", *request), lambda *request: send("last", *request))

    def in_process(name: str) -> list[int]:
        service = Service.open(config(name))
        try:
            return play(
                lambda user, track, time, ts: service.next_track(user, track, time, timestamp=ts),
                lambda user, track, time, ts: service.last_track(user, track, time, timestamp=ts),
            )
        finally:
            service.close()

    answers = over_http("http")
    assert answers == over_http("http-again") == in_process("in-process")
    neighbours = world.context_neighbours
    requests_made = [request for _, playbacks in sessions for request in playbacks]
    for (track, _), served_track in zip(requests_made, answers):
        assert served_track in (neighbours[track] or range(world.n_tracks))
    logs = [(tmp_path / name / "data.json").read_bytes() for name in ("http", "http-again", "in-process")]
    assert logs[0] == logs[1] == logs[2]
    assert len(logs[0].splitlines()) == 4 * 5


FAILING = """
class Fragile:
    def recommend_next(self, user, prev_track, prev_track_time):
        if prev_track == 13:
            return "thirteen"
        return 1 // prev_track
"""


def test_a_failing_recommender_answers_a_clear_500_and_keeps_the_event(write_config, world, tmp_path):
    (tmp_path / "fragile.py").write_text(FAILING)
    config = write_config(custom_arm("fragile.py:Fragile"))
    output = tmp_path / "service.txt"
    with served(config, output=output) as url, requests.Session() as session:
        failures = [post(session, url, "next", user, 0, 0.5) for user in (1, 2, 3)]
        wrong = post(session, url, "next", 4, 13, 0.5)
        assert answer(session, url, 5, 1, 0.5) == 1
        post(session, url, "last", 1, 0, 0.5).raise_for_status()
    for response in failures:
        assert response.status_code == 500
        assert response.json() == {
            "error": "recommender fragile.py:Fragile (arm C) raised ZeroDivisionError: "
            "integer division or modulo by zero"
        }
    assert wrong.status_code == 500 and "answered 'thirteen', not a track id in 0..499" in wrong.json()["error"]
    # The answered requests are logged as always; the failed ones are kept beside them, one line each.
    assert [(e["message"], e["user"]) for e in read_events(tmp_path / "log")] == [("next", 5), ("last", 1)]
    failed = [orjson.loads(line) for line in (tmp_path / "log" / FAILED_FILE_NAME).read_bytes().splitlines()]
    assert [(row["user"], row["track"], row["recommendation"], row["experiments"]) for row in failed] == [
        (1, 0, None, {EXPERIMENT: "C"}),
        (2, 0, None, {EXPERIMENT: "C"}),
        (3, 0, None, {EXPERIMENT: "C"}),
        (4, 13, None, {EXPERIMENT: "C"}),
    ]
    # One stderr line per distinct error, and the count at the stop.
    text = output.read_text()
    assert text.count("raised ZeroDivisionError") == 1
    assert text.count("answered 'thirteen'") == 1
    assert "custom recommenders failed 4 request(s) (2 distinct error(s)" in text

    # In process the same failure is an exception naming the class.
    service = Service.open(write_config(custom_arm("fragile.py:Fragile"), name="again.yaml", log_dir="again"))
    try:
        with pytest.raises(RecommenderFailed, match=r"fragile.py:Fragile \(arm C\) raised ZeroDivisionError"):
            service.next_track(1, 0, 0.5)
    finally:
        service.close()


@pytest.mark.parametrize(
    ("source", "arm", "expected"),
    [
        (None, {}, "no recommender file {file}"),
        ("def broken(:\n", {}, "cannot import {file}: SyntaxError"),
        ("import no_such_module_here\n", {}, "cannot import {file}: ModuleNotFoundError"),
        ("class Other: pass\n", {}, "{file} has no class 'Mine'"),
        (
            "class Mine:\n    def __init__(self, recs): pass\n    def recommend_next(self, u, t, s): return 0\n",
            {"data": {"recs": "no/such.json"}},
            "{file}: data files not found: recs={file.parent}/no/such.json",
        ),
        ("class Mine: pass\n", {}, "{file}: Mine has no recommend_next"),
        (
            "class Mine:\n    def __init__(self, k): pass\n    def recommend_next(self, u, t, s): return 0\n",
            {"params": {"k": 1, "kk": 2}},
            "{file}: Mine(k, kk) failed: TypeError",
        ),
        (
            "class Mine:\n    def __init__(self): raise ValueError('no data')\n"
            "    def recommend_next(self, u, t, s): return 0\n",
            {},
            "{file}: Mine(no arguments) failed: ValueError: no data",
        ),
    ],
)
def test_a_recommender_that_cannot_be_built_stops_the_start_in_one_line_naming_the_file(
    write_config, tmp_path, source, arm, expected
):
    file = tmp_path / "mine.py"
    if source is not None:
        file.write_text(source)
    config = write_config(custom_arm("mine.py:Mine", **arm))
    result = subprocess.run(
        [sys.executable, "-m", "botify", "serve", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"botify: experiment {EXPERIMENT}, arm C: ")
    assert expected.format(file=file) in line


def test_a_module_path_names_a_class_too(write_config, world, tmp_path, monkeypatch):
    package = tmp_path / "student_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "recs.py").write_text(COURSE_STYLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(
        custom_arm("student_pkg.recs:CourseContextual", params={"tracks_with_recs": str(world.path / "recs.json")})
    )
    service = Service.open(config)
    try:
        assert service.next_track(1, 1, 0.5) == 5
        assert service.describe_experiments()["experiments"][0]["arms"][0] == {
            "name": "C",
            "recommender": "student_pkg.recs:CourseContextual",
            "params": {"tracks_with_recs": str(world.path / "recs.json")},
        }
    finally:
        service.close()


@pytest.mark.parametrize(
    ("arm", "message"),
    [
        ({"recommender": "random", "params": {"k": 1}}, "`params` is only for a recommender class of your own"),
        ({"recommender": "x.py:Mine", "k": 3}, "`k` is only for the built-in recommenders"),
        ({"recommender": "x.py:Mine", "exploration": 0.1}, "`exploration` is only for the built-in recommenders"),
        ({"recommender": "x.py:not a name"}, "must look like path/to/file.py:ClassName"),
        ({"recommender": "x.py:Mine", "params": ["k"]}, ".params must map argument names to values"),
        ({"recommender": "x.py:Mine", "params": {"a": 1}, "data": {"a": "f"}}, "given both in `params` and in `data`"),
        ({"recommender": "tpo_pop"}, "or a class of your own"),
    ],
)
def test_config_checks_custom_arms(write_config, arm, message):
    from botify.config import load_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write_config([{"name": EXPERIMENT, "arms": [arm]}]))


def test_custom_examples_are_documented():
    readme = (EXAMPLES / "README.md").read_text()
    for path in sorted(EXAMPLES.glob("*.py")):
        assert path.name in readme
    assert "recommend_next(self, user, prev_track, prev_track_time" in readme


NUMPY_ANSWERS = """
import numpy as np


class Numpyish:
    def __init__(self, propensity):
        self.given = propensity

    def recommend_next(self, user, prev_track, prev_track_time):
        return np.random.randint(0, 10, dtype=np.int64)

    def propensity(self, user, prev_track, served):
        return np.float64(self.given) if isinstance(self.given, float) else self.given
"""


@pytest.mark.parametrize("given", [0.1, 1.0, 0.0, 1.5, float("nan"), "0.5", True, None])
def test_numpy_answers_are_served_and_a_propensity_must_be_a_probability(write_config, tmp_path, given):
    (tmp_path / "numpyish.py").write_text(NUMPY_ANSWERS)
    service = Service.open(write_config(custom_arm("numpyish.py:Numpyish", params={"propensity": given})))
    try:
        if isinstance(given, float) and 0 < given <= 1:
            answers = [service.next_track(1, 0, 0.5) for _ in range(20)]
            assert all(type(track) is int and 0 <= track < 10 for track in answers) and len(set(answers)) > 1
        else:
            with pytest.raises(RecommenderFailed, match=r"propensity gave .*, not a number in \(0, 1\]"):
                service.next_track(1, 0, 0.5)
    finally:
        service.close()
    logged = read_events(tmp_path / "log")
    assert [event[PROPENSITY_KEY] for event in logged] == ([given] * 20 if logged else [])


def test_the_simulator_gets_the_same_log_from_both_transports(tmp_path):
    """Seeded simulated traffic (two processes) against two custom arms, one reading the users' earlier sessions and
    one drawing from the global `random`: the real server over HTTP and the in-process service write the same log."""
    from botify_lab.pipeline.experiment import Traffic, run_experiment
    from sim.generator import generate_world
    from tests.conftest import world_knobs

    world = tmp_path / "world"
    generate_world(world, seed=3, n_tracks=300, n_users=40, dim=8, **world_knobs())
    top_tracks = tmp_path / "top_tracks.json"
    top_tracks.write_bytes(orjson.dumps(list(range(0, 300, 7))))
    experiment = {
        "name": EXPERIMENT,
        "arms": [
            {"recommender": f"{EXAMPLES / 'user_history.py'}:UserHistory", "data": {"top_tracks": str(top_tracks)}},
            {
                "recommender": f"{EXAMPLES / 'sticky_artist_skip.py'}:StickyArtistSkip",
                "data": {"tracks": str(world / "tracks.json"), "top_tracks": str(top_tracks)},
            },
        ],
    }
    logs, sessions = {}, {}
    for transport in ("http", "in_process"):
        traffic = Traffic(episodes=80, seed=5, processes=2, transport=transport)
        log_dir = run_experiment(world, [experiment], traffic, tmp_path / transport)
        logs[transport] = (log_dir / "data.json").read_bytes()
        sessions[transport] = (log_dir / SESSIONS_FILE_NAME).read_bytes()
    assert logs["http"] == logs["in_process"]
    assert sessions["http"] == sessions["in_process"]  # the in-process parts' sessions merged as one service's
    events = [orjson.loads(line) for line in logs["http"].splitlines()]
    assert sum(event["message"] == "last" for event in events) == 80
    assert {event["experiments"][EXPERIMENT] for event in events} == {"C", "T1"}
    # Users come back (40 users, 80 sessions): some of UserHistory's answers are no popular track but one the user
    # liked in an earlier session.
    history_answers = [
        e["recommendation"] for e in events if e["message"] == "next" and e["experiments"][EXPERIMENT] == "C"
    ]
    assert any(track not in range(0, 300, 7) for track in history_answers)


def test_a_failing_class_stops_a_pipeline_run_alike_on_both_transports(tmp_path):
    """The pipeline's traffic is strict: a class that raises stops the run, over HTTP (a 500, asked once) and in
    process alike, with the class, the user and the error in one message."""
    from botify_lab.pipeline.experiment import Traffic, run_experiment
    from sim.agents import InvalidAnswer
    from sim.generator import generate_world
    from tests.conftest import world_knobs

    world = tmp_path / "world"
    generate_world(world, seed=3, n_tracks=300, n_users=40, dim=8, **world_knobs())
    student = tmp_path / "picky.py"
    student.write_text(
        "class Picky:\n"
        "    def recommend_next(self, user, prev_track, prev_track_time):\n"
        "        if user % 5 == 0:\n"
        "            raise ValueError(f'no answer for user {user}')\n"
        "        return (prev_track + 1) % 300\n"
    )
    experiment = {"name": EXPERIMENT, "arms": [{"recommender": f"{student}:Picky"}]}
    raised = r"picky\.py:Picky \(arm C\) raised ValueError: no answer for user \d+"
    for transport in ("http", "in_process"):
        traffic = Traffic(episodes=60, seed=5, processes=2, transport=transport)
        with pytest.raises(InvalidAnswer, match=raised):
            run_experiment(world, [experiment], traffic, tmp_path / transport)
