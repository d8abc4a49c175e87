"""`python -m sim world|run` as a user runs them, in real subprocesses."""
from __future__ import annotations

import subprocess
import sys
import time

import orjson

SIM = [sys.executable, "-m", "sim"]


def run(*args, stdin: str | None = "", timeout: float = 120):
    return subprocess.run([*SIM, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=timeout)


def test_world_help_documents_every_knob_and_generation_is_deterministic(tmp_path):
    help_text = run("world", "--help").stdout
    for flag in ("--out", "--seed", "--tracks", "--users", "--dim", "--artist-size-sigma", "--popularity-alignment"):
        assert flag in help_text
    for name in ("a", "b"):
        result = run("world", "--out", tmp_path / name, "--tracks", 600, "--users", 40, "--dim", 8, "--genres", 4)
        assert result.returncode == 0, result.stderr
    for file in ("tracks.json", "users.json", "tracks.npy", "world.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert orjson.loads((tmp_path / "a" / "world.json").read_bytes())["parameters"]["genres"] == 4


def test_run_prints_the_table_and_writes_summary_and_trace(tmp_path, small_world):
    result = run("run", "--world", small_world, "--agent", "random", "--episodes", 300, "--seed", 5, "--days", 2,
                 "--processes", 2, "--summary", tmp_path / "summary.json", "--trace", tmp_path / "trace.jsonl")
    assert result.returncode == 0, result.stderr
    assert "reward" in result.stdout and "steps/second:" in result.stdout and "invalid answers: 0" in result.stdout
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["days_run"] == 2 and summary["total"]["episodes"] == 600
    assert summary["steps_per_second"] > 0
    lines = (tmp_path / "trace.jsonl").read_bytes().splitlines()
    assert len(lines) == summary["total"]["steps"] + 600
    assert set(orjson.loads(lines[0])) == {"day", "episode", "user", "interest", "step", "track", "time",
                                           "budget_left"}


def test_pause_between_days_asks_and_stops_on_no_or_end_of_input(small_world):
    base = ("run", "--world", small_world, "--episodes", 20, "--seed", 1, "--days", 3, "--pause-between-days",
            "--no-progress")
    assert "all        40" in run(*base, stdin="maybe\ny\nn\n").stdout
    started = time.monotonic()
    closed = run(*base, stdin="")
    assert closed.returncode == 0 and "all        20" in closed.stdout
    assert time.monotonic() - started < 30


def test_errors_are_clear_and_exit_nonzero(tmp_path, small_world, loopback_port):
    started = time.monotonic()
    down = run("run", "--world", small_world, "--agent", "http", "--url", f"http://127.0.0.1:{loopback_port}",
               "--episodes", 5, "--seed", 1)
    assert down.returncode == 2 and "unreachable" in down.stderr and "Traceback" not in down.stderr
    assert time.monotonic() - started < 20
    missing = run("run", "--world", tmp_path / "nope", "--episodes", 5, "--seed", 1)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_strict_stops_at_the_first_invalid_answer(fake_recommender, small_world):
    server = fake_recommender(lambda user, track, time: {"user": user, "track": 123456})
    lenient = run("run", "--world", small_world, "--agent", "http", "--url", server.url, "--episodes", 3,
                  "--seed", 1, "--no-progress")
    assert lenient.returncode == 0 and "invalid answers: 0" not in lenient.stdout
    strict = run("run", "--world", small_world, "--agent", "http", "--url", server.url, "--episodes", 3,
                 "--seed", 1, "--strict")
    assert strict.returncode == 2 and "outside the catalog" in strict.stderr
