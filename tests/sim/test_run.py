"""Runner: lock-step equals scalar, determinism across processes and shards, invalid answers, --strict, the
gymnasium env."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from gymnasium.utils.env_checker import check_env

from sim.agents import ConsoleRecommender, InvalidAnswer, RandomRecommender, SimulationStopped
from sim.env import make_env
from sim.episodes import Outcomes, play_episode
from sim.loader import load_world
from sim.lockstep import run_lockstep
from sim.run import parse_shard, simulate
from sim.summary import summarize


@pytest.fixture(scope="module")
def world(small_world):
    return load_world(small_world)


def test_lockstep_engine_equals_the_scalar_session_episode_by_episode(world):
    agent = RandomRecommender(world.n_tracks)
    episodes = np.arange(1500)
    batch = run_lockstep(world, agent, 11, 3, episodes, trace=True)
    for episode in episodes.tolist():
        reward, steps, invalid, trace = play_episode(world, agent, 11, 3, episode, strict=False, trace=True)
        assert batch.trace[episode] == trace
        assert (batch.rewards[episode], batch.steps[episode], batch.invalid[episode]) == (reward, steps, invalid)


class ArithmeticRecommender:
    """Stateless and deterministic: the answer depends only on the request."""

    def __init__(self, n_tracks):
        self.n_tracks = n_tracks

    def recommend(self, user, track, time):
        return (track * 31 + user) % self.n_tracks


class StubbornRecommender:
    """Recommends by a fixed rule with per-user memory, and answers garbage on purpose every 7th call."""

    def __init__(self, n_tracks):
        self.n_tracks, self.calls, self.ended = n_tracks, 0, []

    def recommend(self, user, track, time):
        self.calls += 1
        if self.calls % 7 == 0:
            return ["x", -1, self.n_tracks, 2.5, True, None][self.calls // 7 % 6]
        return (track * 31 + user) % self.n_tracks

    def end_session(self, user, track, time):
        self.ended.append(user)


def test_first_day_continues_an_earlier_run_day_for_day(small_world, tmp_path):
    """The loop of days serves day 1 after retraining: it must be the very day 1 of a two-day run."""
    both = tmp_path / "both.jsonl"
    simulate(small_world, agent="random", episodes=150, days=2, seed=4, trace_path=both, progress=False)
    parts = []
    for first_day in (0, 1):
        path = tmp_path / f"day-{first_day}.jsonl"
        summary = simulate(
            small_world, agent="random", episodes=150, seed=4, first_day=first_day, trace_path=path, progress=False
        )
        assert [d["day"] for d in summary["per_day"]] == [first_day]
        parts.append(path.read_bytes())
    assert parts[0] + parts[1] == both.read_bytes() and parts[0] != parts[1]
    with pytest.raises(ValueError, match="first_day"):
        simulate(small_world, agent="random", episodes=10, seed=4, first_day=-1, progress=False)


def test_invalid_answers_are_counted_heard_as_nothing_and_never_crash(world):
    agent = StubbornRecommender(world.n_tracks)
    summary = simulate(world, agent=agent, episodes=60, seed=5, progress=False)
    assert summary["invalid_answers"] > 0
    assert summary["agent"] == "StubbornRecommender" and len(agent.ended) == 60
    with pytest.raises(InvalidAnswer, match=r"episode \d+ user \d+ step \d+: answer .* (not an integer|outside)"):
        simulate(world, agent=StubbornRecommender(world.n_tracks), episodes=60, seed=5, strict=True, progress=False)


def test_trace_is_identical_for_any_process_count(world, small_world, tmp_path):
    traces = []
    for processes in (1, 2):
        path = tmp_path / f"trace-{processes}.jsonl"
        summary = simulate(
            small_world,
            agent="random",
            episodes=400,
            days=2,
            seed=9,
            processes=processes,
            trace_path=path,
            progress=False,
        )
        traces.append(path.read_bytes())
        assert summary["days_run"] == 2 and [d["day"] for d in summary["per_day"]] == [0, 1]
    assert traces[0] == traces[1]
    # An in-process recommender without a batch method runs the scalar path; its traces match too.
    for processes in (1, 2):
        simulate(
            world,
            agent=ArithmeticRecommender(world.n_tracks),
            episodes=80,
            seed=2,
            processes=processes,
            trace_path=tmp_path / f"scalar-{processes}.jsonl",
            progress=False,
        )
    assert (tmp_path / "scalar-1.jsonl").read_bytes() == (tmp_path / "scalar-2.jsonl").read_bytes()

    lines = [orjson.loads(line) for line in traces[0].splitlines()]
    by_episode: dict[tuple, list] = {}
    for line in lines:
        by_episode.setdefault((line["day"], line["episode"]), []).append(line)
    assert len(by_episode) == 800
    for rows in by_episode.values():
        assert rows[0]["step"] == 0 and rows[0]["time"] == 1.0
        assert [r["step"] for r in rows] == list(range(len(rows)))
        assert rows[-1]["budget_left"] == 0 and all(r["budget_left"] > 0 for r in rows[:-1])


def test_same_seed_same_summary_other_seed_other(small_world):
    runs = [simulate(small_world, agent="random", episodes=300, seed=s, progress=False) for s in (1, 1, 2)]
    assert runs[0]["per_day"] == runs[1]["per_day"] and runs[0]["per_day"] != runs[2]["per_day"]
    day = runs[0]["per_day"][0]
    assert set(day) == {
        "day",
        "episodes",
        "steps",
        "reward_mean",
        "reward_sem",
        "steps_mean",
        "steps_sem",
        "invalid_answers",
    }
    assert day["reward_sem"] > 0 and day["steps_mean"] >= 5


def test_gymnasium_environment_passes_check_env_and_replays_with_a_seed(world):
    env = make_env(world, 0)
    check_env(env, skip_render_check=True)
    runs = []
    for _ in range(2):
        env.action_space.seed(0)
        observation, info = env.reset(seed=123)
        rewards, done = [], False
        while not done:
            observation, reward, done, truncated, info = env.step(env.action_space.sample())
            rewards.append(reward)
            assert not truncated and env.observation_space.contains(observation)
        runs.append(rewards)
    assert runs[0] == runs[1] and info["budget_left"] == 0


def rewards_by_episode(trace: bytes) -> dict[int, list[float]]:
    """Day 0's listen times per episode, the first track's 1.0 left out."""
    rewards: dict[int, list[float]] = {}
    for line in trace.splitlines():
        row = orjson.loads(line)
        if row["day"] == 0 and row["step"] > 0:
            rewards.setdefault(row["episode"], []).append(row["time"])
    return rewards


def play_env(env, agent, episodes: int) -> list[list[float]]:
    played = []
    for _ in range(episodes):
        observation, info = env.reset()
        user = info["user_id"]
        agent.start_session(user, info["key"]) if hasattr(agent, "start_session") else None
        rewards, done = [], False
        while not done:
            action = agent.recommend(user, observation["track"], float(observation["time"][0]))
            observation, reward, done, _, _ = env.step(action)
            rewards.append(reward)
        played.append(rewards)
    return played


@pytest.mark.parametrize("make_agent", [RandomRecommender, lambda n: ArithmeticRecommender(n)])
def test_make_env_plays_the_episodes_of_simulate_with_the_same_seed(world, tmp_path, make_agent):
    episodes = 120
    simulate(
        world,
        agent=make_agent(world.n_tracks),
        episodes=episodes,
        seed=17,
        trace_path=tmp_path / "t.jsonl",
        progress=False,
    )
    expected = rewards_by_episode((tmp_path / "t.jsonl").read_bytes())
    env = make_env(world, 17)
    assert play_env(env, make_agent(world.n_tracks), episodes) == [expected[e] for e in range(episodes)]
    # reset(seed=s) switches to traffic seed s from its first episode.
    assert play_env(env, make_agent(world.n_tracks), 1) != [expected[episodes - 1]]
    env.reset(seed=17)
    assert play_env(env, make_agent(world.n_tracks), 3) == [expected[e] for e in range(1, 4)]


def test_console_recommender_prompts_until_a_valid_track_and_stops_at_end_of_input(world, capsys):
    answers = iter(["abc", "99999", " 7 "])
    console = ConsoleRecommender(world.describe_track, world.n_tracks, read_line=lambda prompt: next(answers))
    assert console.recommend(3, 0, 1.0) == 7
    shown = capsys.readouterr().out
    assert "user 3 listened to" in shown and "'abc' is not a track id" in shown and "'99999'" in shown

    def closed(prompt):
        raise EOFError

    with pytest.raises(SimulationStopped):
        ConsoleRecommender(world.describe_track, world.n_tracks, read_line=closed).recommend(3, 0, 1.0)


def test_standard_error_is_scipys_sem():
    from scipy import stats

    outcomes = Outcomes(
        np.arange(4), np.arange(4), np.array([1.0, 2.5, 3.25, 7.0]), np.array([5, 6, 9, 20]), np.zeros(4, int), None
    )
    summary = summarize({"day": 0}, outcomes)
    assert summary["reward_sem"] == pytest.approx(stats.sem(outcomes.rewards), rel=1e-12)
    assert summary["steps_sem"] == pytest.approx(stats.sem(outcomes.steps), rel=1e-12)


def test_a_worker_with_no_episodes_keeps_the_trace_complete(small_world, tmp_path):
    summary = simulate(
        small_world, agent="random", episodes=1, seed=3, processes=2, trace_path=tmp_path / "t.jsonl", progress=False
    )
    assert len((tmp_path / "t.jsonl").read_bytes().splitlines()) == summary["total"]["steps"] + 1


class PerUserCounter:
    """Deterministic with per-user state: the answer depends on how many requests this user made before, so any
    change in the order of one user's sessions changes the traffic."""

    def __init__(self, n_tracks):
        self.n_tracks, self.requests = n_tracks, {}

    def recommend(self, user, track, time):
        self.requests[user] = self.requests.get(user, 0) + 1
        return (track * 31 + user * 7 + self.requests[user]) % self.n_tracks

    def end_session(self, user, track, time):
        pass


def step_key(line: bytes) -> tuple[int, int, int]:
    row = orjson.loads(line)
    return row["day"], row["episode"], row["step"]


@pytest.mark.parametrize("agent", ["random", "per_user_counter"])
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_shards_together_play_exactly_the_full_run(world, tmp_path, agent, shards):
    def run(name, shard=None, processes=1):
        chosen = PerUserCounter(world.n_tracks) if agent == "per_user_counter" else agent
        episodes = 150 if agent == "per_user_counter" else 400
        summary = simulate(
            world,
            agent=chosen,
            episodes=episodes,
            days=2,
            seed=21,
            shard=shard,
            processes=processes,
            trace_path=tmp_path / name,
            progress=False,
        )
        return summary, (tmp_path / name).read_bytes()

    full_summary, full = run("full.jsonl")
    lines = []
    for index in range(shards):
        # Worker processes are forked per day, so only a stateless recommender can be spread over them.
        processes = 2 if index == 0 and agent == "random" else 1
        summary, trace = run(f"shard-{index}.jsonl", (index, shards), processes)
        rows = [orjson.loads(line) for line in trace.splitlines()]
        assert all(world.users.ids.tolist().index(row["user"]) % shards == index for row in rows)
        assert [step_key(line) for line in trace.splitlines()] == sorted(step_key(line) for line in trace.splitlines())
        assert summary["shard"] == [index, shards]
        assert summary["total"]["steps"] + summary["total"]["episodes"] == len(rows)
        lines += trace.splitlines(keepends=True)
    assert b"".join(sorted(lines, key=step_key)) == full
    assert full_summary["shard"] is None


def test_shard_must_be_i_of_n(world):
    assert parse_shard("2/3") == (2, 3)
    for text in ("3/3", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(text)
    with pytest.raises(ValueError, match="0 <= I < N"):
        simulate(world, episodes=5, seed=1, shard=(2, 2), progress=False)
