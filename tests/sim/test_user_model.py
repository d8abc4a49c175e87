"""Each rule of the course's user model against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim import rng
from sim.loader import load_world
from sim.user import Session, draw_user

from .conftest import write_world

#            0    1    2    3    4    5    6    7..11
ARTISTS = ["A", "A", "B", "A", "C", "D", "B", "E", "F", "G", "H", "I"]
EMBEDDINGS = [[1, 0], [2, 0], [1, 1], [0.5, 0], [-1, 0], [0, 3], [1, 0]] + [[-2, -2]] * 5
USERS = [
    {
        "user": 100,
        "interests": [0],
        "consume_bias": 0.5,
        "consume_sharpness": 2.0,
        "interest_neighbours": 1,
        "session_budget": 1000,
    },
    {
        "user": 101,
        "interests": [0],
        "consume_bias": 0.5,
        "consume_sharpness": 2.0,
        "interest_neighbours": 1,
        "session_budget": 1000,
        "artist_discount_gamma": 0.5,
    },
    {"user": 102, "interests": [0], "consume_bias": 0.5, "consume_sharpness": 2.0, "interest_neighbours": 3},
    {"user": 103, "interests": [5, 4]},
]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def hand_world(tmp_path_factory):
    return load_world(write_world(tmp_path_factory.mktemp("hand"), ARTISTS, EMBEDDINGS, USERS))


def key_for(world, user_index: int, start: int = 0) -> int:
    return next(k for k in range(start, start + 10_000) if draw_user(world, k) == user_index)


def test_defaults_apply_when_users_json_has_no_override(hand_world):
    users = hand_world.users
    assert users.interest_neighbours[3] == 10 and users.session_budget[3] == 5
    assert users.consume_bias[3] == 5.0 and users.consume_sharpness[3] == 1.0
    assert users.artist_discount_gamma[3] == 0.8 and users.artist_discount_gamma[1] == 0.5


def test_new_session_starts_at_the_nearest_track_by_inner_product_with_time_one(hand_world):
    # e = [1, 0]: track 1 scores 2.0, more than the interest itself (1.0), so with 1 neighbour it is always first.
    session = Session(hand_world, key_for(hand_world, 0))
    assert session.user == 100 and session.interest == 0
    assert session.history == [(1, 1.0)] and session.budget == 1000 and session.step == 0


def test_first_track_is_uniform_among_the_interest_neighbours_ties_to_smaller_id(hand_world):
    # Top 3 for e = [1, 0]: track 1 (2.0), then tracks 0, 2 and 6 tie at 1.0 -> the smaller ids 0 and 2.
    firsts = [Session(hand_world, k).history[0][0] for k in range(20_000) if draw_user(hand_world, k) == 2]
    counts = np.bincount(firsts, minlength=12)
    assert set(np.nonzero(counts)[0]) == {0, 1, 2}
    assert counts[[0, 1, 2]].min() > 0.28 * len(firsts)


def test_interest_and_user_are_drawn_uniformly(hand_world):
    users = [draw_user(hand_world, k) for k in range(8000)]
    assert np.bincount(users).min() > 1800
    interests = [Session(hand_world, k).interest for k in range(8000) if draw_user(hand_world, k) == 3]
    assert 0.45 < np.mean(np.array(interests) == 5) < 0.55


def test_listen_time_sigmoid_artist_discount_repeat_and_rounding(hand_world):
    session = Session(hand_world, key_for(hand_world, 0))  # first track 1, artist A
    # Track 2 (B): score 1, sigmoid((1 - 0.5) * 2) = 0.7311 -> 0.73; no earlier B playback.
    assert session.listen(2) == round(sigmoid(1.0), 2) == 0.73
    # Track 3 (A): score 0.5 -> sigmoid(0) = 0.5; one A playback so far (the first track) -> 0.5 * 0.8.
    assert session.listen(3) == 0.4
    # Track 0 (A): sigmoid(1) * 0.8 ** 2 = 0.4679 -> 0.47.
    assert session.listen(0) == round(sigmoid(1.0) * 0.64, 2) == 0.47
    # A repeat is worth nothing, whatever its score.
    assert session.listen(2) == 0.0
    # Track 6 (B): the repeat counted as a B playback, so n = 2: 0.7311 * 0.64 -> 0.47 (0.58 if it had not).
    assert session.listen(6) == 0.47
    # Track 4 (C): score -1 -> sigmoid(-3) = 0.0474 -> 0.05.
    assert session.listen(4) == 0.05
    assert session.reward == pytest.approx(1.0 + 0.73 + 0.4 + 0.47 + 0.0 + 0.47 + 0.05)


def test_users_own_artist_discount_gamma(hand_world):
    session = Session(hand_world, key_for(hand_world, 1))
    assert session.listen(3) == round(sigmoid(0.0) * 0.5, 2) == 0.25


def test_budget_drops_exactly_when_the_uniform_draw_exceeds_the_time(hand_world):
    session = Session(hand_world, key_for(hand_world, 0))
    drops = 0
    for step, track in enumerate([2, 3, 0, 2, 6, 4, 5, 7, 8, 9], start=1):
        before = session.budget
        time = session.listen(track)
        u = rng.uniform(session.key, rng.BUDGET, step)
        assert session.budget == before - (u > time)
        drops += u > time
    assert 0 < drops < 10  # both branches were exercised


def test_session_ends_when_the_budget_reaches_zero(hand_world):
    session = Session(hand_world, key_for(hand_world, 3))  # default budget 5
    steps = 0
    while not session.done:
        session.listen(11 - steps % 5)  # scores far below the bias: times near 0.0
        steps += 1
    assert session.budget == 0 and steps >= 5
    with pytest.raises(RuntimeError):
        session.listen(0)


def test_a_perfect_recommender_keeps_the_user_forever(tmp_path):
    n = 80
    world = load_world(
        write_world(
            tmp_path,
            [f"artist {i}" for i in range(n)],
            [[10.0, 0.0]] * n,
            [{"user": 0, "interests": [0], "consume_bias": 0.0, "consume_sharpness": 1.0}],
        )
    )
    session = Session(world, 7)
    first = session.last_track
    for track in [t for t in range(n) if t != first][:60]:
        assert session.listen(track) == 1.0
    assert session.budget == 5 and not session.done


def test_invalid_answer_plays_nothing_and_applies_the_budget_rule(hand_world):
    session = Session(hand_world, key_for(hand_world, 0))
    assert session.hear_nothing() == 0.0
    assert session.history[-1] == (None, 0.0) and session.last_track == 1
    assert session.budget == 1000 - (rng.uniform(session.key, rng.BUDGET, 1) > 0.0)
