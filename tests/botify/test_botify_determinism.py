"""Same seeded requests, same recommendations: whatever the interleaving of users, the worker count or the store."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from botify.launch import served

USERS = range(12)
STEPS = 8


def user_session(url: str, user: int) -> list[int]:
    with requests.Session() as session:
        return [
            session.post(f"{url}/next/{user}", json={"track": (user * 31 + step) % 500, "time": step / STEPS}).json()[
                "track"
            ]
            for step in range(STEPS)
        ]


def sequential(url: str) -> dict[int, list[int]]:
    return {user: user_session(url, user) for user in USERS}


def concurrent(url: str) -> dict[int, list[int]]:
    with ThreadPoolExecutor(6) as pool:
        return dict(zip(reversed(USERS), pool.map(lambda user: user_session(url, user), reversed(USERS))))


def test_recommendations_depend_on_seed_user_and_request_only(write_config, world, redis_url):
    experiment = world.top_pop_experiment()
    with served(write_config([experiment], name="one.yaml", log_dir="log1")) as url:
        one_worker_in_order = sequential(url)
    with served(write_config([experiment], name="two.yaml", log_dir="log2")) as url:
        one_worker_interleaved = concurrent(url)
    with served(write_config([experiment], name="three.yaml", log_dir="log3", store=redis_url), workers=2) as url:
        two_workers_on_redis = concurrent(url)
    with served(write_config([experiment], name="four.yaml", log_dir="log4", seed=8)) as url:
        other_seed = sequential(url)
    assert one_worker_in_order == one_worker_interleaved == two_workers_on_redis
    assert other_seed != one_worker_in_order
    # Repeating a request is a new request: a user's draws differ along the session.
    random_arm_users = [user for user in USERS if len(set(one_worker_in_order[user])) > 1]
    assert random_arm_users


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_restart_continues_the_counters_and_reset_counters_zeroes_them(write_config, world, request, store):
    """Per-user counters survive a clean restart (memory: saved in the log folder; Redis: the hash is kept), so a
    restarted experiment draws as if it had never stopped; a new log folder or --reset-counters starts afresh."""
    store = request.getfixturevalue("redis_url") if store == "redis" else "memory"
    workers = 2 if store != "memory" else 1
    experiment = world.top_pop_experiment()
    with served(write_config([experiment], name="once.yaml", log_dir="once", store=store), workers=workers) as url:
        uninterrupted = [sequential(url), sequential(url)]
    config = write_config([experiment], name="twice.yaml", log_dir="twice", store=store)
    with served(config, workers=workers) as url:
        first = sequential(url)
    with served(config, workers=workers) as url:
        second = sequential(url)
    with served(config, workers=workers, reset_counters=True) as url:
        after_reset = sequential(url)
    assert [first, second] == uninterrupted
    assert uninterrupted[0] != uninterrupted[1]
    assert after_reset == first


def test_on_the_simulated_clock_the_log_depends_only_on_the_requests(write_config, world, events, tmp_path):
    """`clock: simulated` logs the time each request carries and no latency, so a log written by concurrent
    clients is, once sorted by (time, user), the same file whatever the interleaving; the wall clock ignores it."""
    experiment = world.top_pop_experiment()

    def run(name: str, play) -> list[dict]:
        with served(write_config([experiment], name=f"{name}.yaml", log_dir=name, clock="simulated")) as url:
            play(url)
        logged = events(tmp_path / name)
        return sorted(logged, key=lambda event: (event["timestamp"], event["user"]))

    def timed_session(url: str, user: int) -> None:
        with requests.Session() as session:
            for step in range(STEPS):
                answer = session.post(
                    f"{url}/next/{user}",
                    json={"track": user + step, "time": 0.5},
                    headers={"X-Botify-Time": str(1_000_000 * user + step)},
                )
                assert answer.status_code == 200, answer.text
            session.post(
                f"{url}/last/{user}",
                json={"track": user, "time": 1.0},
                headers={"X-Botify-Time": str(1_000_000 * user + STEPS)},
            ).raise_for_status()

    in_order = run("in-order", lambda url: [timed_session(url, user) for user in USERS])
    with ThreadPoolExecutor(6) as pool:
        interleaved = run("interleaved", lambda url: list(pool.map(lambda user: timed_session(url, user), USERS)))
    assert in_order == interleaved
    assert len(in_order) == len(USERS) * (STEPS + 1)
    assert {event["latency"] for event in in_order} == {0.0}
    assert [event["timestamp"] for event in in_order if event["user"] == 3] == [3_000_000 + s for s in range(STEPS + 1)]

    # A request without its time, or with a time that is not a non-negative integer, is refused and not logged.
    with served(write_config([experiment], name="refusing.yaml", log_dir="refusing", clock="simulated")) as url:
        for headers in ({}, {"X-Botify-Time": "soon"}, {"X-Botify-Time": "-5"}, {"X-Botify-Time": "9" * 40}):
            answer = requests.post(f"{url}/next/1", json={"track": 1, "time": 0.5}, headers=headers)
            assert answer.status_code == 400
            assert "simulated clock" in answer.json()["error"]
    assert events(tmp_path / "refusing") == []

    # The wall clock (the default) stamps events itself and measures latency, header or not.
    with served(write_config([experiment], name="wall.yaml", log_dir="wall")) as url:
        requests.post(
            f"{url}/next/1", json={"track": 1, "time": 0.5}, headers={"X-Botify-Time": "5"}
        ).raise_for_status()
    (logged,) = events(tmp_path / "wall")
    assert logged["timestamp"] > 1_700_000_000_000
    assert logged["latency"] > 0


def test_a_config_names_a_known_clock(write_config, world):
    from botify.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="`clock` must be one of wall, simulated, got 'virtual'"):
        load_config(write_config([world.top_pop_experiment()], clock="virtual"))
