"""The re-fitted world generator: artist sizes like the course catalog's, interests shared like the course users',
and the in-memory arrays the knob search plays are exactly the files a world folder holds."""

from __future__ import annotations

import collections

import numpy as np
import orjson
import pytest

from sim.draws import artist_size_pmf
from sim.generator import generate_world, world_arrays
from sim.loader import load_world
from sim.settings import KNOBS
from tests.conftest import UPSTREAM_WORLD

# The fitted world knobs (params.yaml `world:` holds the same values once this change lands there).
FITTED = {
    "genres": 12,
    "styles_per_genre": 8,
    "artist_size_mu": -0.31,
    "artist_size_sigma": 2.15,
    "artist_size_max": 80,
    "genre_zipf": 0.8,
    "genre_spread": 0.5,
    "style_spread": 0.5,
    "artist_spread": 4.1,
    "track_spread": 1.9,
    "artist_popularity_sigma": 1.5,
    "track_popularity_sigma": 1.0,
    "popularity_alignment": 1.0,
    "popularity_offset": 0.5,
    "interests": 3,
    "interest_popularity_exponent": 0.68,
}


def fitted_knobs(**overrides) -> dict:
    assert set(FITTED) == set(KNOBS)
    return {**FITTED, **overrides}


def test_artist_sizes_follow_the_fitted_truncated_lognormal():
    pmf = artist_size_pmf(-0.31, 2.15, 80)
    assert len(pmf) == 80 and pmf.sum() == pytest.approx(1.0)
    cdf = np.cumsum(pmf)
    assert np.searchsorted(cdf, 0.5) + 1 == 1  # median: one track
    assert 9 <= np.searchsorted(cdf, 0.9) + 1 <= 12  # the course: 90th percentile 11
    arrays = world_arrays(seed=0, n_tracks=50000, n_users=10, dim=4, **fitted_knobs())
    sizes = arrays["sizes"]
    assert sizes.sum() == 50000 and sizes.min() >= 1 and sizes.max() <= 80
    assert np.median(sizes) == 1 and 9 <= np.percentile(sizes, 90) <= 12
    assert 10000 <= len(sizes) <= 12500  # the course: 11,464 artists
    assert np.bincount(arrays["track_artist"]).tolist() == sizes.tolist()


def test_the_fit_matches_the_course_catalog():
    path = UPSTREAM_WORLD / "tracks.json"
    if not path.is_file():
        pytest.skip(f"course catalog not found under {UPSTREAM_WORLD}")
    counts = collections.Counter(orjson.loads(line)["artist"] for line in path.open("rb") if line.strip())
    real = np.array(sorted(counts.values()))
    pmf = artist_size_pmf(-0.31, 2.15, 80)
    expected = pmf * len(real)
    observed = np.bincount(real, minlength=81)[1:]
    # singletons, small and large artists within a few percent of the catalog's shares
    for low, high in ((1, 1), (2, 3), (4, 10), (11, 80)):
        assert expected[low - 1 : high].sum() / len(real) == pytest.approx(
            observed[low - 1 : high].sum() / len(real), abs=0.02
        )


def test_interests_are_shared_like_the_course_users(upstream_world):
    users = [orjson.loads(line) for line in (upstream_world / "users.json").open("rb") if line.strip()]
    course = np.bincount(np.array([u["interests"] for u in users]).ravel())
    arrays = world_arrays(seed=0, n_tracks=50000, n_users=len(users), dim=4, **fitted_knobs())
    ours = np.bincount(arrays["interests"].ravel())
    assert (ours > 0).sum() == pytest.approx((course > 0).sum(), rel=0.06)  # distinct interest tracks
    assert ours.max() < 2 * course.max()
    # the users themselves are the course's: bias uniform in [0, 10], sharpness U[1, 2] or its inverse
    assert 0 <= arrays["consume_bias"].min() and arrays["consume_bias"].max() <= 10
    sharpness = arrays["consume_sharpness"]
    assert 0.5 <= sharpness.min() and sharpness.max() <= 2 and abs((sharpness > 1).mean() - 0.5) < 0.05


def test_arrays_are_the_world_files(tmp_path):
    settings = dict(seed=3, n_tracks=1500, n_users=120, dim=8, **fitted_knobs())
    meta = generate_world(tmp_path, **settings)
    arrays = world_arrays(**settings)
    world = load_world(tmp_path)
    assert np.array_equal(np.load(tmp_path / "tracks.npy"), arrays["embeddings"])
    assert np.array_equal(world.users.interests.reshape(120, -1), arrays["interests"])
    assert np.array_equal(world.users.consume_bias, arrays["consume_bias"])
    # artists are told apart by name in the catalog: the same partition of tracks
    by_name = {}
    for track, artist in enumerate(world.track_artist):
        by_name.setdefault(int(artist), set()).add(track)
    by_index = {}
    for track, artist in enumerate(arrays["track_artist"]):
        by_index.setdefault(int(artist), set()).add(track)
    assert sorted(map(sorted, by_name.values())) == sorted(map(sorted, by_index.values()))
    assert meta["stats"]["artists"] == len(arrays["sizes"]) and meta["parameters"]["artist_size_max"] == 80
    again = tmp_path / "again"
    assert generate_world(again, **settings)["content_sha256"] == meta["content_sha256"]


def test_knob_checks(tmp_path):
    with pytest.raises(ValueError, match="artist_size_max"):
        world_arrays(seed=0, n_tracks=100, n_users=5, dim=4, **fitted_knobs(artist_size_max=0))
    with pytest.raises(ValueError, match="integer"):
        world_arrays(seed=0, n_tracks=100, n_users=5, dim=4, **fitted_knobs(artist_size_max=7.5))
    flat = world_arrays(seed=0, n_tracks=3000, n_users=3000, dim=4, **fitted_knobs(interest_popularity_exponent=0.0))
    assert np.bincount(flat["interests"].ravel()).max() <= 12  # uniform interests: no track is everyone's
