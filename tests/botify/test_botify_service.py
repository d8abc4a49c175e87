"""The transport-free Service: driven in process it writes the same log as the HTTP app, line for line."""

import re

import pytest

from botify.service import BadRequest, Service, ServiceUnavailable

REQUESTS = [
    ("next", 5533, 9, 0.25),
    ("next", 7121, 0, 1.0),
    ("last", 5533, 9, 1),
    ("next", 5533, 10, 0.0),
    ("next", 42, 499, 0.123456789),
    ("last", 42, 3, 0.5),
]


def normalized(log_dir) -> bytes:
    """The log with the two values that differ run to run (timestamp, latency) zeroed."""
    data = (log_dir / "data.json").read_bytes()
    data = re.sub(rb'"timestamp":\d+', b'"timestamp":0', data)
    return re.sub(rb'"latency":[0-9.e-]+', b'"latency":0', data)


def test_in_process_calls_log_exactly_what_http_calls_log(write_config, world, open_app, tmp_path):
    experiments = [
        world.top_pop_experiment(),
        {"name": "SHADOW", "arms": [{"recommender": "random"}, {"recommender": "sticky_artist"}]},
    ]
    client = open_app(write_config(experiments, name="http.yaml", log_dir="http")).test_client()
    over_http = []
    for message, user, track, listen_time in REQUESTS:
        answer = client.post(f"/{message}/{user}", json={"track": track, "time": listen_time})
        over_http.append(answer.get_json().get("track"))
    service = Service.open(write_config(experiments, name="local.yaml", log_dir="local"))
    try:
        in_process = [
            service.next_track(user, track, listen_time)
            if message == "next"
            else service.last_track(user, track, listen_time)
            for message, user, track, listen_time in REQUESTS
        ]
    finally:
        service.close()
    assert in_process == over_http
    assert normalized(tmp_path / "local") == normalized(tmp_path / "http")
    assert len(normalized(tmp_path / "local").splitlines()) == len(REQUESTS)


@pytest.mark.parametrize(
    "user, track, listen_time",
    [
        (-1, 1, 0.5),
        (2**31, 1, 0.5),
        (True, 1, 0.5),
        ("1", 1, 0.5),
        (1, 500, 0.5),
        (1, 1.0, 0.5),
        (1, True, 0.5),
        (1, 1, 1.5),
        (1, 1, float("nan")),
        (1, 1, "0.5"),
        (1, 1, None),
    ],
)
def test_bad_arguments_raise_bad_request_and_log_nothing(write_config, world, tmp_path, user, track, listen_time):
    service = Service.open(write_config([world.top_pop_experiment()]))
    try:
        for call in (service.next_track, service.last_track):
            with pytest.raises(BadRequest):
                call(user, track, listen_time)
    finally:
        service.close()
    assert (tmp_path / "log" / "data.json").read_bytes() == b""


def test_a_log_that_cannot_take_the_event_raises_service_unavailable(write_config, world, tmp_path, monkeypatch):
    import os

    service = Service.open(write_config([world.top_pop_experiment()]))
    real_write = os.write

    def enospc(fd, data):
        if fd == service.event_log._fd:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", enospc)
    try:
        with pytest.raises(ServiceUnavailable, match="not recorded"):
            service.last_track(1, 1, 0.5)
    finally:
        monkeypatch.setattr(os, "write", real_write)
        service.close()


def test_one_service_per_log_folder_in_process_too(write_config, world):
    config = write_config([world.top_pop_experiment()])
    first = Service.open(config)
    try:
        with pytest.raises(Exception, match=f"in use by another botify service \\(pid {__import__('os').getpid()}\\)"):
            Service.open(config)
    finally:
        first.close()
    Service.open(config).close()  # released by close()
