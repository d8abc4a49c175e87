"""The user's rules give the same results on the single-session path (`sim.episodes.play_episode`, one `Session`)
and on the lock-step path (`sim.lockstep.run_lockstep`, sessions as arrays), over random small worlds and random
recommender answers: repeats, tracks of the last track's artist, ids outside the catalog, long sessions.

Both paths must write the same trace bytes and outcomes, and each trace is replayed against the spec's rules
(docs: course-behaviour.md, section 2), recomputed here from the episode's draws: the start, whether a track is a
repeat, n (earlier playbacks by the artist), the budget after each answer and the step the session ends at. The
rules the two paths share are caught by the replay; the parts each path keeps for itself (the memory of playbacks,
the bookkeeping) by the comparison. The listen-time formula's own numbers are pinned by test_user_model.py.
"""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sim import rng
from sim.episodes import play_episode
from sim.lockstep import run_lockstep
from sim.user import FIRST_TRACK_TIME, listen_times
from sim.world import Users, World


@st.composite
def worlds(draw) -> World:
    """A world of up to 40 tracks and 4 users; few artists (many same-artist tracks), tied scores, any budget."""
    n_tracks = draw(st.integers(1, 40))
    n_artists = draw(st.integers(1, n_tracks))
    dim = draw(st.integers(1, 20))
    values = st.floats(-2, 2, width=32) | st.sampled_from([0.0, 1.0, -1.0])  # ties in scores and neighbours
    embeddings = draw(arrays(np.float64, (n_tracks, dim), elements=values))
    users = draw(st.lists(user_parameters(n_tracks), min_size=1, max_size=4))
    interests = [user["interests"] for user in users]
    return World(
        path=None,
        embeddings=embeddings,
        track_artist=np.array(draw(st.lists(st.integers(0, n_artists - 1), min_size=n_tracks, max_size=n_tracks))),
        artist_names=[f"artist {a}" for a in range(n_artists)],
        titles=[f"song {t}" for t in range(n_tracks)],
        users=Users(
            ids=np.arange(100, 100 + len(users)),
            interests=np.array([track for own in interests for track in own], dtype=np.int64),
            interest_offsets=np.cumsum([0] + [len(own) for own in interests]),
            **{
                name: np.array([user[name] for user in users])
                for name in (
                    "consume_bias",
                    "consume_sharpness",
                    "interest_neighbours",
                    "session_budget",
                    "artist_discount_gamma",
                )
            },
        ),
        meta=None,
    )


def user_parameters(n_tracks: int):
    return st.fixed_dictionaries(
        {
            "interests": st.lists(st.integers(0, n_tracks - 1), min_size=1, max_size=3),
            "consume_bias": st.floats(-8, 8),
            "consume_sharpness": st.floats(0, 40),
            "interest_neighbours": st.integers(1, n_tracks),
            "session_budget": st.integers(1, 30),
            "artist_discount_gamma": st.floats(0, 1),
        }
    )


def answer_scripts(n_tracks: int):
    """An episode's answers, used in turn (and again from the start): a track, an id outside the catalog, the last
    track again, or a track of the last track's artist."""
    answer = st.one_of(
        st.tuples(st.just("track"), st.integers(0, n_tracks - 1)),
        st.tuples(st.just("invalid"), st.sampled_from([-1, n_tracks, -(2**62), 2**62])),
        st.tuples(st.just("last"), st.just(0)),
        st.tuples(st.just("same_artist"), st.integers(0, 5)),
    )
    return st.lists(answer, min_size=1, max_size=12)


class ScriptedRecommender:
    """Answers each episode from its script, by the session's step and last track; both the scalar and the batch
    API, so both paths hear exactly the same answers."""

    def __init__(self, world: World, scripts: dict[int, list]):
        self.track_artist = world.track_artist
        self.scripts = scripts  # by episode key
        self.key, self.step = 0, 0

    def answer(self, key: int, step: int, last_track: int) -> int:
        # Every session here ends within about 100 steps (40 tracks, then repeats); a broken rule must not hang.
        assert step <= 1000, "the session does not end"
        kind, value = self.scripts[key][(step - 1) % len(self.scripts[key])]
        if kind == "last":
            return last_track
        if kind == "same_artist":
            mates = np.flatnonzero(self.track_artist == self.track_artist[last_track])
            return int(mates[value % len(mates)])
        return value

    def start_session(self, user: int, key: int) -> None:
        self.key, self.step = key, 0

    def recommend(self, user: int, track: int, time: float) -> int:
        self.step += 1
        return self.answer(self.key, self.step, track)

    def recommend_batch(self, users, tracks, times, keys: np.ndarray, steps: np.ndarray) -> np.ndarray:
        answers = [self.answer(k, s, t) for k, s, t in zip(keys.tolist(), steps.tolist(), tracks.tolist())]
        return np.array(answers, dtype=np.int64)


def nearest_tracks(world: World, interest: int) -> list[int]:
    """All tracks by inner product with the interest, best first, ties to the smaller id (brute force)."""
    scores = np.multiply(world.embeddings, world.embeddings[interest]).sum(axis=1)
    return np.lexsort((np.arange(world.n_tracks), -scores)).tolist()


def replay_against_the_rules(world: World, key: int, recommender: ScriptedRecommender, trace: bytes) -> float:
    """Check one episode's trace line by line against the spec's rules; returns the session's total listen time."""
    users = world.users
    rows = [orjson.loads(line) for line in trace.splitlines()]
    user = rng.integer(key, rng.USER, 0, world.n_users)
    own_interests = users.interests_of(user)
    interest = int(own_interests[rng.integer(key, rng.INTEREST, 0, len(own_interests))])
    neighbours = int(users.interest_neighbours[user])
    first = nearest_tracks(world, interest)[rng.integer(key, rng.FIRST_TRACK, 0, neighbours)]
    budget = int(users.session_budget[user])
    assert (rows[0]["user"], rows[0]["interest"]) == (users.ids[user], interest)
    assert (rows[0]["step"], rows[0]["track"], rows[0]["time"], rows[0]["budget_left"]) == (0, first, 1.0, budget)

    playbacks, last_track, reward = [first], first, FIRST_TRACK_TIME
    for step, row in enumerate(rows[1:], start=1):
        answer = recommender.answer(key, step, last_track)
        assert row["step"] == step
        if not 0 <= answer < world.n_tracks:
            assert (row["track"], row["time"]) == (None, 0.0)  # nothing plays, and it is no playback
        else:
            artist = world.track_artist[answer]
            repeated = answer in playbacks
            same_artist = sum(world.track_artist[track] == artist for track in playbacks)
            expected = listen_times(
                world.embeddings,
                np.array([answer]),
                True,
                np.array([same_artist]),
                world.embeddings[[interest]],
                users.consume_bias[[user]],
                users.consume_sharpness[[user]],
                users.artist_discount_gamma[[user]],
            )[0]
            assert (row["track"], row["time"]) == (answer, 0.0 if repeated else expected)
            playbacks.append(answer)
            last_track = answer
        budget -= rng.uniform(key, rng.BUDGET, step) > row["time"]
        assert row["budget_left"] == budget
        reward += row["time"]
    assert budget == 0 and all(row["budget_left"] > 0 for row in rows[:-1])  # ends exactly when the budget is spent
    return reward


@settings(max_examples=250, deadline=None)
@given(
    data=st.data(),
    world=worlds(),
    seed=st.integers(0, 2**64 - 1),
    day=st.integers(0, 3),
    episodes=st.lists(st.integers(0, 10**6), min_size=1, max_size=6, unique=True),
)
def test_both_paths_apply_the_same_rules(data, world, seed, day, episodes):
    keys = [rng.episode_key(seed, day, episode) for episode in episodes]
    scripts = {key: data.draw(answer_scripts(world.n_tracks)) for key in keys}
    recommender = ScriptedRecommender(world, scripts)

    batch = run_lockstep(world, recommender, seed, day, np.array(episodes), trace=True)
    for index, (episode, key) in enumerate(zip(episodes, keys)):
        reward, steps, invalid, trace = play_episode(world, recommender, seed, day, episode, strict=False, trace=True)
        assert batch.trace[index] == trace
        assert (batch.rewards[index], batch.steps[index], batch.invalid[index]) == (reward, steps, invalid)
        assert batch.users[index] == orjson.loads(trace.splitlines()[0])["user"]
        assert replay_against_the_rules(world, key, recommender, trace) == reward
        assert steps == len(trace.splitlines()) - 1 and invalid == trace.count(b'"track":null')
