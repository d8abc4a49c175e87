"""Same seeded requests, same recommendations: whatever the interleaving of users, the worker count or the store."""
from concurrent.futures import ThreadPoolExecutor

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
    with served(write_config([experiment], name="one.yaml")) as url:
        one_worker_in_order = sequential(url)
    with served(write_config([experiment], name="two.yaml")) as url:
        one_worker_interleaved = concurrent(url)
    with served(write_config([experiment], name="three.yaml", store=redis_url), workers=2) as url:
        two_workers_on_redis = concurrent(url)
    with served(write_config([experiment], name="four.yaml", seed=8)) as url:
        other_seed = sequential(url)
    assert one_worker_in_order == one_worker_interleaved == two_workers_on_redis
    assert other_seed != one_worker_in_order
    # Repeating a request is a new request: a user's draws differ along the session.
    random_arm_users = [user for user in USERS if len(set(one_worker_in_order[user])) > 1]
    assert random_arm_users


def test_a_restart_on_redis_starts_counting_afresh(write_config, world, redis_url):
    config = write_config([world.top_pop_experiment()], store=redis_url)
    runs = []
    for _ in range(2):
        with served(config, workers=2) as url:
            runs.append(sequential(url))
    assert runs[0] == runs[1]
