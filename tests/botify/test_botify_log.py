"""The event log under load: no line lost, duplicated or interleaved; complete lines even when killed mid-burst."""

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from botify.launch import served
from tests.botify.conftest import botify_supervisor

CLIENTS = 6
REQUESTS_PER_CLIENT = 60


def burst(url: str, client: int, count: int) -> list[tuple[str, int, int]]:
    """One keep-alive client: a session of /next calls ended by /last; returns (message, user, status)."""
    sent = []
    with requests.Session() as session:
        for step in range(count):
            user = client * 1000 + step % 7
            message = "last" if step % 10 == 9 else "next"
            answer = session.post(f"{url}/{message}/{user}", json={"track": (client + step) % 500, "time": 0.5})
            sent.append((message, user, answer.status_code))
    return sent


def run_burst(url: str) -> list[tuple[str, int, int]]:
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = pool.map(lambda client: burst(url, client, REQUESTS_PER_CLIENT), range(CLIENTS))
        return [item for result in results for item in result]


def assert_log_matches(sent, logged) -> None:
    assert all(status == 200 for _, _, status in sent)
    assert sorted((m, u) for m, u, _ in sent) == sorted((e["message"], e["user"]) for e in logged)
    for event in logged:
        assert (event["recommendation"] is None) == (event["message"] == "last")


def test_concurrent_burst_logs_every_event_once(write_config, world, events, tmp_path):
    """...and each "next" line carries the probability its arm drew the recommendation with."""
    with served(write_config([world.top_pop_experiment()])) as url:
        sent = run_burst(url)
    logged = events(tmp_path / "log")
    assert len(logged) == CLIENTS * REQUESTS_PER_CLIENT
    assert_log_matches(sent, logged)
    arm_probability = {"C": 1 / world.n_tracks, "T1": 1.0, "T2": 1 / 3, "T3": 1 / 6}  # Random, TopPop(1, 3, 6)
    served_next = [event for event in logged if event["message"] == "next"]
    assert {event["experiments"]["TOP_POP"] for event in served_next} == set(arm_probability)
    for event in served_next:
        assert event["propensity"] == pytest.approx(arm_probability[event["experiments"]["TOP_POP"]])


def test_several_workers_on_redis_share_one_rotating_log(write_config, world, events, tmp_path, redis_url):
    """Two worker processes write one log that rotates every few KB: every line survives, in RotatingFileHandler
    names."""
    config = write_config([world.top_pop_experiment()], store=redis_url, log_max_bytes=12 * 1024, log_backup_count=12)
    with served(config, workers=2) as url:
        sent = run_burst(url)
    log_dir = tmp_path / "log"
    rotated = sorted(path.name for path in log_dir.glob("data.json.*"))
    assert len(rotated) >= 4 and "data.json.1" in rotated
    for path in log_dir.glob("data.json*"):
        assert path.stat().st_size <= 12 * 1024
    logged = events(log_dir)
    assert len(logged) == CLIENTS * REQUESTS_PER_CLIENT
    assert_log_matches(sent, logged)
    for user in {event["user"] for event in logged}:  # each user's requests were sequential: order survives rotation
        timestamps = [event["timestamp"] for event in logged if event["user"] == user]
        assert timestamps == sorted(timestamps)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_mid_burst_leaves_only_complete_lines(write_config, world, events, tmp_path, redis_url, workers):
    store = "memory" if workers == 1 else redis_url
    ok_answers = []
    with served(write_config([world.top_pop_experiment()], store=store), workers=workers) as url:
        server = botify_supervisor(url)
        stop = threading.Event()

        def hammer(client: int) -> None:
            with requests.Session() as session:
                for step in range(2000):
                    if stop.is_set():
                        return
                    try:
                        answer = session.post(f"{url}/next/{client}", json={"track": step % 500, "time": 1.0})
                    except requests.ConnectionError:
                        return
                    if answer.status_code == 200:
                        ok_answers.append(client)

        threads = [threading.Thread(target=hammer, args=(client,)) for client in range(4)]
        for thread in threads:
            thread.start()
        while len(ok_answers) < 200:
            threading.Event().wait(0.01)
        server.send_signal(signal.SIGTERM)
        assert server.wait(20) == 0
        stop.set()
        for thread in threads:
            thread.join(20)
    logged = events(tmp_path / "log")  # raises on a partial line
    assert len(logged) >= len(ok_answers) >= 200
