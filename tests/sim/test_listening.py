"""The listening world (`sim.listening`): a synthetic history factorized by LightFM WARP, as the course made its own."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import orjson
import pytest
import yaml

from botify_lab.pipeline.params import ListeningParams
from sim.listening import (
    LISTENING_KNOBS,
    SHARED_KNOBS,
    _grouped,
    _mainstream_shares,
    listening_history,
    listening_settings,
    listening_world,
    listening_world_arrays,
)

from .conftest import PARAMS

SMALL = {"tracks": 2000, "users": 200}
SMALL_LISTENING = {"listeners": 600, "communities": 8, "epochs": 3}
# world.json's content_sha256 of the small world below, built by LightFM compiled without -march=native -ffast-math
# (as `make venv` installs it: the Makefile's LIGHTFM_CFLAGS) on one thread.
SMALL_WORLD_SHA256 = "39127b923128f7d3e975d1b80c2cbd43a3d1c78d9d181ecee8e60b29e1af7f88"


def world_section() -> dict:
    return yaml.safe_load(PARAMS.read_text())["world"]


def small_arguments(**listening_overrides) -> dict:
    section = world_section()
    return {
        "seed": section["seed"],
        "n_tracks": SMALL["tracks"],
        "n_users": SMALL["users"],
        "shared": {name: section[name] for name in SHARED_KNOBS},
        "listening": {**section["listening"], **SMALL_LISTENING, **listening_overrides},
    }


def small_listening_params(folder) -> dict:
    """params.yaml with the listening source at the small sizes, written into `folder`; returns its content."""
    params = yaml.safe_load(PARAMS.read_text())
    params["world"].update(source="listening", **SMALL)
    params["world"]["listening"].update(SMALL_LISTENING)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def test_the_schema_and_the_generator_know_the_same_knobs():
    assert tuple(ListeningParams.model_fields) == LISTENING_KNOBS
    assert set(world_section()["listening"]) == set(LISTENING_KNOBS)


def test_bad_knobs_are_named():
    knobs = world_section()["listening"]
    with pytest.raises(TypeError, match=r"unknown knobs \['colour'\], missing knobs \['scale'\]"):
        listening_settings({**{k: v for k, v in knobs.items() if k != "scale"}, "colour": 1})
    with pytest.raises(ValueError, match="songs_min must not exceed songs_max"):
        listening_settings({**knobs, "songs_min": 50, "songs_max": 10})
    with pytest.raises(ValueError, match="mainstream_share must be within"):
        listening_settings({**knobs, "mainstream_share": 1.5})
    with pytest.raises(ValueError, match="mainstream_dispersion must be below 1"):
        listening_settings({**knobs, "mainstream_dispersion": 1.0})
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        listening_settings({**knobs, "epochs": 2.5})


def history(**overrides):
    """A history over 3,000 tracks of 400 artists in 10 communities, with its inputs."""
    settings = listening_settings({**world_section()["listening"], "listeners": 3000, "communities": 10, **overrides})
    rng = np.random.default_rng(5)
    track_artist = rng.integers(0, 400, size=3000)
    artist_community = rng.integers(0, 10, size=400)
    weights = rng.lognormal(0.0, 1.5, size=3000)
    listeners, tracks = listening_history(np.random.default_rng(6), track_artist, artist_community, weights, settings)
    return settings, track_artist, artist_community, weights, listeners, tracks


def test_a_listener_without_mainstream_songs_stays_within_their_communities():
    settings, track_artist, artist_community, _, listeners, tracks = history(
        mainstream_share=0.0, artist_follow_share=0.0
    )
    pairs = np.unique(listeners * 10 + artist_community[track_artist[tracks]])
    communities_per_listener = np.bincount(pairs // 10)
    assert communities_per_listener.max() <= settings["communities_per_listener"]
    assert communities_per_listener.min() >= 1
    assert np.array_equal(np.unique(listeners), np.arange(settings["listeners"]))
    assert len(np.unique(listeners * 3000 + tracks)) == len(listeners)  # distinct listens only


def test_listeners_differ_in_how_mainstream_they_are_only_with_a_dispersion():
    def outside_shares(dispersion: float) -> np.ndarray:
        """Each listener's share of songs outside the communities they hold."""
        _, track_artist, artist_community, _, listeners, tracks = history(
            mainstream_share=0.3, mainstream_dispersion=dispersion, artist_follow_share=0.0, communities_per_listener=1
        )
        community = artist_community[track_artist[tracks]]
        held = np.array([np.bincount(community[listeners == listener]).argmax() for listener in range(3000)])
        return np.bincount(listeners, weights=community != held[listeners]) / np.bincount(listeners)

    same, spread = outside_shares(0.0), outside_shares(0.8)
    assert np.std(spread) > 2 * np.std(same), (np.std(same), np.std(spread))
    assert (spread < 0.02).mean() > 0.3 > (same < 0.02).mean()  # most listeners near none, a few mostly mainstream
    settings = listening_settings({**world_section()["listening"], "listeners": 20000, "mainstream_share": 0.3})
    for dispersion in (0.0, 0.8):
        shares = _mainstream_shares(np.random.default_rng(0), {**settings, "mainstream_dispersion": dispersion})
        assert abs(shares.mean() - 0.3) < 0.01, (dispersion, shares.mean())


def test_songs_follow_popularity_and_followed_artists_add_their_songs():
    _, track_artist, _, weights, listeners, tracks = history(mainstream_share=1.0, artist_follow_share=0.0)
    counts = np.bincount(tracks, minlength=len(weights))
    assert np.corrcoef(np.log(weights), np.log1p(counts))[0, 1] > 0.8

    def songs_per_heard_artist(**overrides) -> float:
        *_, listeners, tracks = history(**overrides)
        return len(listeners) / len(np.unique(listeners * 400 + track_artist[tracks]))

    alone = songs_per_heard_artist(artist_follow_share=0.0)
    following = songs_per_heard_artist(artist_follow_share=1.0, artist_follow_songs=5)
    assert following > 1.5 * alone, (alone, following)


def test_grouped_ranges_cover_each_group_once():
    groups = np.array([2, 0, 2, 1, 0])
    weights = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    order, cumulative, low, high = _grouped(groups, weights, 4)
    assert order.tolist() == [1, 4, 3, 0, 2]
    assert cumulative.tolist() == [2.0, 7.0, 11.0, 12.0, 15.0]
    assert low.tolist() == [0.0, 7.0, 11.0, 15.0] and high.tolist() == [7.0, 11.0, 15.0, 15.0]


def test_factors_put_co_listened_tracks_together_and_grow_with_listens():
    arrays = listening_world_arrays(**small_arguments(epochs=10))
    embeddings, counts = arrays["embeddings"].astype(np.float64), arrays["listen_count"]
    heard = np.nonzero(counts >= 20)[0]
    scores = embeddings[heard] @ embeddings[heard].T
    np.fill_diagonal(scores, -np.inf)
    nearest = heard[scores.argmax(axis=1)]
    community = arrays["artist_community"][arrays["track_artist"]]
    same_community = (community[heard] == community[nearest]).mean()
    chance = (np.bincount(community[heard]) ** 2).sum() / len(heard) ** 2
    assert same_community > 2 * chance, (same_community, chance)
    # WARP pushes often-heard tracks outward: at the course's learning rate of 0.01 (factors far from converged) the
    # most heard tenth's norms are about 1.7 times the least heard tenth's here; at the default's 0.1, about 1.4
    assert norm_growth(arrays) > 1.25
    assert norm_growth(listening_world_arrays(**small_arguments(epochs=10, learning_rate=0.01))) > 1.5
    interests = arrays["interests"]
    assert interests.shape == (SMALL["users"], world_section()["interests"])
    assert (counts[interests] > 0).all()  # interests are tracks someone listened to


def norm_growth(arrays: dict) -> float:
    """The mean factor norm of the most heard tenth of the heard tracks over the least heard tenth's."""
    counts = arrays["listen_count"]
    norms = np.linalg.norm(arrays["embeddings"].astype(np.float64), axis=1)
    rare, common = np.quantile(counts[counts > 0], [0.1, 0.9])
    return norms[(counts > 0) & (counts >= common)].mean() / norms[(counts > 0) & (counts <= rare)].mean()


def test_interests_drawn_by_popularity_reach_one_track_artists_as_the_courses_do():
    """Following artists multiplies a large artist's listeners, so interests drawn by listeners miss one-track artists'
    songs; drawn by popularity they fall on them about as often as the catalog holds them (the course's users: 12.4%
    of interests, its catalog 12.9%). The fit is the same either way: only the users differ."""
    by_listeners = listening_world_arrays(
        **small_arguments(interest_listen_exponent=1.0, interest_popularity_exponent=0.0)
    )
    by_popularity = listening_world_arrays(
        **small_arguments(interest_listen_exponent=0.0, interest_popularity_exponent=0.7)
    )
    assert np.array_equal(by_listeners["embeddings"], by_popularity["embeddings"])
    one_track = np.bincount(by_listeners["track_artist"])[by_listeners["track_artist"]] == 1
    listeners_share = one_track[by_listeners["interests"]].mean()
    popularity_share = one_track[by_popularity["interests"]].mean()
    assert popularity_share > 1.5 * listeners_share, (popularity_share, listeners_share, one_track.mean())
    assert abs(popularity_share - one_track.mean()) < abs(listeners_share - one_track.mean())
    assert (by_popularity["listen_count"][by_popularity["interests"]] > 0).all()


def test_the_same_settings_give_the_same_bytes_on_any_machine(tmp_path):
    """Two builds are byte-identical, and equal to the bytes recorded here: a LightFM compiled with
    -march=native (pip's default for this sdist) would give other factors on another CPU."""
    metas = [listening_world(tmp_path / name, **small_arguments()) for name in ("a", "b")]
    assert metas[0] == metas[1]
    for name in ("tracks.json", "users.json", "tracks.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert metas[0]["content_sha256"] == SMALL_WORLD_SHA256, (
        "the listening world's bytes changed: if LightFM was built with native flags, rebuild it as `make venv` "
        "does (`rm .venv/.lightfm-build; touch requirements.txt; make venv`); if the generator changed on purpose, "
        "record the new hash here"
    )
    assert metas[0]["generator"] == "sim.listening.listening_world"
    assert np.load(tmp_path / "a" / "tracks.npy").shape == (SMALL["tracks"], world_section()["listening"]["components"])


def test_the_command_line_builds_it_from_the_params_file_and_names_bad_knobs(tmp_path):
    params = small_listening_params(tmp_path)
    sim = [sys.executable, "-m", "sim", "world", "--params", str(tmp_path / "params.yaml")]
    built = subprocess.run([*sim, "--out", str(tmp_path / "w")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert "listening world written" in built.stdout
    assert orjson.loads((tmp_path / "w" / "world.json").read_bytes())["content_sha256"] == SMALL_WORLD_SHA256

    params["world"]["listening"]["colour"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    refused = subprocess.run([*sim, "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert "unknown world.listening knobs ['colour']" in refused.stderr
    assert not (tmp_path / "x").exists()


def test_the_pipeline_builds_it_when_params_choose_it(tmp_path):
    from botify_lab.pipeline.world import generate_world_dir

    small_listening_params(tmp_path)
    built = generate_world_dir(tmp_path)
    assert orjson.loads((built / "world.json").read_bytes())["content_sha256"] == SMALL_WORLD_SHA256
