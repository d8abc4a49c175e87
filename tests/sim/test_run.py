"""Runner: lock-step equals scalar, determinism across processes, invalid answers, --strict, the gymnasium env."""
from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from sim.agents import ConsoleRecommender, InvalidAnswer, RandomRecommender, SimulationStopped
from sim.engine import run_lockstep
from sim.env import ListeningEnv
from sim.run import play_episode, simulate
from sim.world import load_world


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
        summary = simulate(small_world, agent="random", episodes=400, days=2, seed=9, processes=processes,
                           trace_path=path, progress=False)
        traces.append(path.read_bytes())
        assert summary["days_run"] == 2 and [d["day"] for d in summary["per_day"]] == [0, 1]
    assert traces[0] == traces[1]
    # An in-process recommender without a batch method runs the scalar path; its traces match too.
    for processes in (1, 2):
        simulate(world, agent=ArithmeticRecommender(world.n_tracks), episodes=80, seed=2, processes=processes,
                 trace_path=tmp_path / f"scalar-{processes}.jsonl", progress=False)
    assert (tmp_path / "scalar-1.jsonl").read_bytes() == (tmp_path / "scalar-2.jsonl").read_bytes()
    import orjson

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
    assert set(day) == {"day", "episodes", "steps", "reward_mean", "reward_sem", "steps_mean", "steps_sem",
                        "invalid_answers"}
    assert day["reward_sem"] > 0 and day["steps_mean"] >= 5


def test_gymnasium_environment_passes_check_env_and_replays_with_a_seed(world):
    env = ListeningEnv(world)
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


def test_standard_error_is_scipys_sem(small_world):
    from scipy import stats

    from sim.run import DayPart, _summarize

    part = DayPart(np.arange(4), np.array([1.0, 2.5, 3.25, 7.0]), np.array([5, 6, 9, 20]), np.zeros(4, int), None)
    summary = _summarize({"day": 0}, part)
    assert summary["reward_sem"] == pytest.approx(stats.sem(part.rewards), rel=1e-12)
    assert summary["steps_sem"] == pytest.approx(stats.sem(part.steps), rel=1e-12)


def test_a_worker_with_no_episodes_keeps_the_trace_complete(small_world, tmp_path):
    summary = simulate(small_world, agent="random", episodes=1, seed=3, processes=2, trace_path=tmp_path / "t.jsonl",
                       progress=False)
    assert len((tmp_path / "t.jsonl").read_bytes().splitlines()) == summary["total"]["steps"] + 1
