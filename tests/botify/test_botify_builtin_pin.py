"""The built-in recommenders' logs, pinned: the same config and requests must give these exact bytes.

The hashes were taken before custom recommenders and session contexts were added to the service; a change to how
the service draws, picks or logs for the built-in arms changes them (and every published table would move).
"""

import hashlib

import pytest

from botify.service import Service

# sha256 of data.json after `play`, per arm; taken on the service before issue 23's changes.
PINNED = {
    "random": "a3aa9d930163c68676bcd9bd7473b8533fc84bc65adcb1b41630036da680dbcf",
    "sticky_artist": "09e3dcc9e051f1bd2ef67d7487fd2702010b95dde3b76b242ef5c1d5c0554bd6",
    "toppop": "b8ebad9c74aeb2cd9f1e96128dd7b1258ba6a362bd225ec16ec7bb9b69cecdbe",
    "indexed": "91e24d49654c9a675f4300da93e88f09b2c46265ce4be3f4fa84145873ef0f76",
    "contextual": "e6b6af2f3bc9ef9872ac5d889fef5a79ced56d354de8482ef609098a20cae5ea",
    "contextual_exploring": "a1ec822ae0a93a0f6bbba5839992c03fe7dc9fc32bcb5d03acdfe89c0a358e2f",
}


def arms(world) -> dict[str, dict]:
    return {
        "random": {"recommender": "random"},
        "sticky_artist": {"recommender": "sticky_artist"},
        "toppop": {"recommender": "toppop", "path": str(world.path / "top_tracks.json"), "k": 3},
        "indexed": {"recommender": "indexed", "path": str(world.path / "user_recs.json")},
        "contextual": {"recommender": "contextual", "path": str(world.path / "recs.json")},
        "contextual_exploring": {
            "recommender": "contextual",
            "path": str(world.path / "recs.json"),
            "exploration": 0.25,
        },
    }


def play(service: Service) -> None:
    """Sessions of five users (two of them with a known user list), each following the service's own answers."""
    timestamp = 1_000
    for user in (5, 6, 17, 5533, 7121):
        for session in range(2):
            track, listen_time = (user + session) % 3, 1.0
            for step in range(6):
                timestamp += 1
                track = service.next_track(user, track, listen_time, timestamp=timestamp)
                listen_time = round(((user * 7 + step * 13) % 100) / 100, 2)
            timestamp += 1
            service.last_track(user, track, listen_time, timestamp=timestamp)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_built_in_recommender_writes_the_pinned_log(write_config, world, tmp_path, name):
    config = write_config([{"name": "PIN", "arms": [arms(world)[name]]}], clock="simulated")
    service = Service.open(config)
    try:
        play(service)
    finally:
        service.close()
    logged = (tmp_path / "log" / "data.json").read_bytes()
    assert logged.count(b"\n") == 5 * 2 * 7
    assert hashlib.sha256(logged).hexdigest() == PINNED[name]
