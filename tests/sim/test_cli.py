"""`python -m sim world|run` as a user runs them, in real subprocesses."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import yaml

from sim.settings import KNOBS, SOURCE_KEYS

from .conftest import PARAMS

SIM = [sys.executable, "-m", "sim"]
WORLD_FILES = ("tracks.json", "users.json", "tracks.npy", "world.json")


def run(*args, stdin: str | None = "", timeout: float = 120, cwd=None):
    return subprocess.run(
        [*SIM, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def test_world_help_documents_every_knob_and_generation_is_deterministic(tmp_path):
    help_text = run("world", "--help").stdout
    knob_flags = [f"--{name.replace('_', '-')}" for name in KNOBS]
    for flag in ("--out", "--params", "--seed", "--tracks", "--users", "--dim", *knob_flags):
        assert flag in help_text
    for name in ("a", "b"):
        result = run(
            "world",
            "--out",
            tmp_path / name,
            "--params",
            PARAMS,
            "--source",
            "generated",  # the catalog tree's knobs; the listening world has its own tests
            "--tracks",
            600,
            "--users",
            40,
            "--dim",
            8,
            "--genres",
            4,
        )
        assert result.returncode == 0, result.stderr
    for file in WORLD_FILES:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    parameters = orjson.loads((tmp_path / "a" / "world.json").read_bytes())["parameters"]
    defaults = yaml.safe_load(PARAMS.read_text())["world"]
    assert parameters["genres"] == 4 and parameters["n_tracks"] == 600 and parameters["seed"] == defaults["seed"]
    assert parameters["popularity_alignment"] == defaults["popularity_alignment"]


def test_world_settings_come_from_the_params_file_in_the_current_folder(tmp_path):
    section = yaml.safe_load(PARAMS.read_text())["world"]
    small = {**section, "source": "generated", "tracks": 500, "users": 30, "dim": 6, "genres": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"seed": 5, "world": small}, sort_keys=False))
    from_file = run("world", "--out", tmp_path / "from-file", cwd=tmp_path)
    assert from_file.returncode == 0, from_file.stderr
    flags = [
        item
        for name, value in small.items()
        if name not in SOURCE_KEYS
        for item in (f"--{name.replace('_', '-')}", value)
    ]
    from_flags = run("world", "--out", tmp_path / "from-flags", "--params", tmp_path / "absent.yaml", *flags)
    assert from_flags.returncode == 0, from_flags.stderr
    for file in WORLD_FILES:
        assert (tmp_path / "from-file" / file).read_bytes() == (tmp_path / "from-flags" / file).read_bytes()

    missing = run("world", "--out", tmp_path / "x", "--params", tmp_path / "absent.yaml", *flags[2:])
    assert missing.returncode == 2 and "absent.yaml not found" in missing.stderr and "--seed" in missing.stderr
    assert "Traceback" not in missing.stderr
    del small["track_spread"]
    (tmp_path / "partial.yaml").write_text(yaml.safe_dump({"world": small}))
    partial = run("world", "--out", tmp_path / "y", "--params", tmp_path / "partial.yaml")
    assert partial.returncode == 2 and "lacks ['track_spread']" in partial.stderr
    assert (
        run(
            "world",
            "--out",
            tmp_path / "y",
            "--params",
            tmp_path / "partial.yaml",
            "--track-spread",
            0.5,
        ).returncode
        == 0
    )


def test_run_prints_the_table_and_writes_summary_and_trace(tmp_path, small_world):
    result = run(
        "run",
        "--world",
        small_world,
        "--agent",
        "random",
        "--episodes",
        300,
        "--seed",
        5,
        "--days",
        2,
        "--processes",
        2,
        "--summary",
        tmp_path / "summary.json",
        "--trace",
        tmp_path / "trace.jsonl",
    )
    assert result.returncode == 0, result.stderr
    assert "reward" in result.stdout and "steps/second:" in result.stdout and "invalid answers: 0" in result.stdout
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["days_run"] == 2 and summary["total"]["episodes"] == 600
    assert summary["steps_per_second"] > 0
    lines = (tmp_path / "trace.jsonl").read_bytes().splitlines()
    assert len(lines) == summary["total"]["steps"] + 600
    assert set(orjson.loads(lines[0])) == {"day", "episode", "user", "interest", "step", "track", "time", "budget_left"}


def test_pause_between_days_asks_and_stops_on_no_or_end_of_input(small_world):
    base = (
        "run",
        "--world",
        small_world,
        "--episodes",
        20,
        "--seed",
        1,
        "--days",
        3,
        "--pause-between-days",
        "--no-progress",
    )
    assert "all        40" in run(*base, stdin="maybe\ny\nn\n").stdout
    started = time.monotonic()
    closed = run(*base, stdin="")
    assert closed.returncode == 0 and "all        20" in closed.stdout
    assert time.monotonic() - started < 30


def test_errors_are_clear_and_exit_nonzero(tmp_path, small_world, loopback_port):
    started = time.monotonic()
    down = run(
        "run",
        "--world",
        small_world,
        "--agent",
        "http",
        "--url",
        f"http://127.0.0.1:{loopback_port}",
        "--episodes",
        5,
        "--seed",
        1,
    )
    assert down.returncode == 2 and "unreachable" in down.stderr and "Traceback" not in down.stderr
    assert time.monotonic() - started < 20
    missing = run("run", "--world", tmp_path / "nope", "--episodes", 5, "--seed", 1)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_strict_stops_at_the_first_invalid_answer(fake_recommender, small_world):
    server = fake_recommender(lambda user, track, time: {"user": user, "track": 123456})
    lenient = run(
        "run",
        "--world",
        small_world,
        "--agent",
        "http",
        "--url",
        server.url,
        "--episodes",
        3,
        "--seed",
        1,
        "--no-progress",
    )
    assert lenient.returncode == 0 and "invalid answers: 0" not in lenient.stdout
    strict = run(
        "run", "--world", small_world, "--agent", "http", "--url", server.url, "--episodes", 3, "--seed", 1, "--strict"
    )
    assert strict.returncode == 2 and "outside the catalog" in strict.stderr


def test_shard_option_plays_one_users_share(tmp_path, small_world):
    result = run(
        "run",
        "--world",
        small_world,
        "--episodes",
        200,
        "--seed",
        3,
        "--shard",
        "1/2",
        "--no-progress",
        "--summary",
        tmp_path / "summary.json",
        "--trace",
        tmp_path / "trace.jsonl",
    )
    assert result.returncode == 0, result.stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["shard"] == [1, 2] and 0 < summary["total"]["episodes"] < 200
    users = {orjson.loads(line)["user"] for line in (tmp_path / "trace.jsonl").read_bytes().splitlines()}
    assert users and all(user % 2 == 1 for user in users)  # the generator's user ids are their rows
    bad = run("run", "--world", small_world, "--episodes", 5, "--seed", 3, "--shard", "2/2")
    assert bad.returncode == 2 and "0 <= I < N" in bad.stderr
