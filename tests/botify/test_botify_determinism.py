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
            session.post(f"{url}/next/{user}", json={"track": (user * 31 + step) % 500, "time": step / STEPS}).json()["track"]
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
