"""The course's world rebuilt: the course's own catalog and users with embeddings from the fitted generator."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import yaml

from sim.__main__ import main
from sim.generator import course_world
from sim.loader import load_world
from tests.sim.test_generator_fidelity import fitted_knobs


@pytest.fixture(scope="module")
def rebuilt(upstream_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("course-world")
    meta = course_world(upstream_world, out, seed=0, dim=32, **fitted_knobs())
    return upstream_world, out, meta


def test_the_course_files_are_kept_and_the_world_loads(rebuilt):
    upstream, out, meta = rebuilt
    assert (out / "tracks.json").read_bytes() == (upstream / "tracks.json").read_bytes()
    assert (out / "users.json").read_bytes() == (upstream / "users.json").read_bytes()
    world = load_world(out)  # verifies world.json's hashes
    assert world.n_tracks == 50000 and world.n_users == 10000 and world.embeddings.shape == (50000, 32)
    assert meta["stats"]["artists"] == 11464 and meta["stats"]["largest_artist_tracks"] == 80
    first = orjson.loads((upstream / "users.json").read_bytes().splitlines()[0])
    assert world.users.interests_of(0).tolist() == first["interests"]
    assert world.users.consume_bias[0] == first["consume_bias"]


def test_the_course_world_plays_like_the_fitted_one(rebuilt):
    """Random and StickyArtist on the rebuilt world: listening is all-or-nothing and an artist's tracks are loved."""
    from botify_lab.inprocess.world_checks import StickyArtistBatch, play_rows
    from botify_lab.research import fidelity as F
    from sim.agents import RandomRecommender

    _, out, _ = rebuilt
    world = load_world(out, verify=False).with_gamma(0.9)
    random_stats = F.statistics(play_rows(world, RandomRecommender(world.n_tracks), 1, 1500))
    sticky_stats = F.statistics(
        play_rows(world, StickyArtistBatch(world.track_artist), 2, 1500), track_artist=world.track_artist, gamma=0.9
    )
    assert 0.3 < random_stats["share_time_zero"] < 0.6
    assert 1.7 < random_stats["mean_time_per_session_user_level"] < 2.6
    assert sticky_stats["saturation_share"] > 0.6
    assert sticky_stats["mean_time_per_session_user_level"] > 1.5 * random_stats["mean_time_per_session_user_level"]


def test_the_command_line_builds_it(upstream_world, tmp_path):
    params = tmp_path / "params.yaml"
    world = {"seed": 0, "tracks": 1, "users": 1, "dim": 8, **fitted_knobs()}
    params.write_text(yaml.safe_dump({"world": world}))
    out = tmp_path / "world"
    assert main(["world", "--out", str(out), "--params", str(params), "--course-catalog", str(upstream_world)]) == 0
    assert np.load(out / "tracks.npy").shape == (50000, 8)
    assert main(["world", "--out", str(out), "--params", str(params), "--course-catalog", str(tmp_path)]) == 2
