"""The bootstrap's scheduler: stages that do not read from each other run at once, each through DVC, and the
repository ends as a plain `dvc repro` leaves it. A toy pipeline in a real git + DVC repository: a source, two
branches that read it (`left` sleeps longer, so it ends last), and a stage that joins them."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from botify_lab.pipeline.scheduler import (
    StageGraph,
    read_stage_graph,
    run_stages,
    stage_environment,
    upstream_first,
)

STEP = """\
import os, sys, time
name, *inputs = sys.argv[1:]
os.makedirs("times", exist_ok=True)
started = time.time()
if os.environ.get("FAIL_STAGE") == name:
    sys.exit(f"{name}: failing on purpose")
time.sleep({"left": 2.0, "right": 1.0}.get(name, 0.0))
params = dict(line.split(": ") for line in open("params.yaml").read().splitlines())
text = name + params.get(name, "") + "".join(open(path).read() for path in inputs)
with open(name + ".txt", "w") as out:
    out.write(text + "\\n")
with open(os.path.join("times", name), "w") as times:
    times.write(f"{started} {time.time()} {os.environ.get('NUMBA_NUM_THREADS')}")
print(f"{name}: wrote {name}.txt")
"""

PIPELINE = {
    "stages": {
        "joined": {  # written first: the scheduler orders by what reads what, not by the file
            "cmd": "python step.py joined left.txt right.txt",
            "deps": ["step.py", "left.txt", "right.txt"],
            "outs": ["joined.txt"],
        },
        "source": {"cmd": "python step.py source", "deps": ["step.py"], "outs": ["source.txt"]},
        "left": {
            "cmd": "python step.py left source.txt",
            "deps": ["step.py", "source.txt"],
            "params": ["left"],
            "outs": ["left.txt"],
        },
        "right": {
            "cmd": "python step.py right source.txt",
            "deps": ["step.py", "source.txt"],
            "params": ["right"],
            "outs": ["right.txt"],
        },
    }
}


@pytest.fixture
def toy_repo(tmp_path, monkeypatch):
    """A toy pipeline in a fresh git + DVC repository, with this venv's DVC first on PATH."""
    for name, value in {
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
        "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(tmp_path / "dvc-system"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FAIL_STAGE", raising=False)
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    repo = tmp_path / "toy"
    repo.mkdir()
    (repo / "step.py").write_text(STEP)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    (repo / "params.yaml").write_text("left: 1\nright: 1\n")
    subprocess.run(["git", "init", "--quiet"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--quiet"], cwd=repo, check=True)
    return repo


def interval(repo: Path, name: str) -> tuple[float, float]:
    start, end, _ = (repo / "times" / name).read_text().split()
    return float(start), float(end)


def numba_threads(repo: Path, name: str) -> str:
    """The NUMBA_NUM_THREADS the scheduler gave the stage."""
    return (repo / "times" / name).read_text().split()[2]


@pytest.mark.slow
def test_stages_that_do_not_read_each_other_run_at_once_and_leave_what_dvc_repro_leaves(toy_repo, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(toy_repo, plain)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "--quiet"], cwd=plain, check=True)

    out = io.BytesIO()
    result = run_stages(toy_repo, 2, out)
    printed = out.getvalue().decode()
    assert not result.failed and set(result.stage_seconds) == {"source", "left", "right", "joined"}
    left, right = interval(toy_repo, "left"), interval(toy_repo, "right")
    assert right[0] < left[1] and left[0] < right[1], (left, right)  # the two branches overlapped
    assert interval(toy_repo, "joined")[0] >= max(left[1], right[1])  # and the join waited for both
    cores = len(os.sched_getaffinity(0))  # a stage alone gets every core for numba's threads, two a share each
    assert [numba_threads(toy_repo, name) for name in ("source", "left", "right", "joined")] == [
        str(cores),
        *[str(max(1, cores // 2))] * 2,
        str(cores),
    ]
    assert (toy_repo / "joined.txt").read_text() == "joinedleft1source\n\nright1source\n\n\n"
    assert "left | left: wrote left.txt" in printed and "right | Running stage 'right':" in printed
    assert "4 of 4 stages ran, 2 at a time" in printed and "dvc push" not in printed
    assert result.longest_chain == ["source", "left", "joined"]  # left sleeps longer than right
    chain = [result.stage_seconds[name] for name in result.longest_chain]
    assert result.longest_chain_seconds == pytest.approx(sum(chain), abs=0.2)
    assert sum(chain) <= result.seconds + 0.2  # the chain bounds the run from below
    # right ended first, so DVC appended it to dvc.lock first; the entries end in the order a plain repro writes
    assert (toy_repo / "dvc.lock").read_text() == (plain / "dvc.lock").read_text()

    again = io.BytesIO()
    assert run_stages(toy_repo, 2, again).stage_seconds == {}
    assert again.getvalue().decode().strip() == "Data and pipelines are up to date."


@pytest.mark.slow
def test_only_a_changed_stage_and_the_stages_reading_it_run_again(toy_repo):
    assert not run_stages(toy_repo, 2, io.BytesIO()).failed
    (toy_repo / "params.yaml").write_text("left: 1\nright: 2\n")
    out = io.BytesIO()
    result = run_stages(toy_repo, 2, out)
    assert set(result.stage_seconds) == {"right", "joined"}
    assert "left |" not in out.getvalue().decode()  # unchanged, and nothing it reads ran: not even asked
    assert (toy_repo / "joined.txt").read_text() == "joinedleft1source\n\nright2source\n\n\n"


@pytest.mark.slow
def test_a_failed_stage_stops_the_run_names_itself_and_leaves_no_half_outputs(toy_repo, monkeypatch):
    monkeypatch.setenv("FAIL_STAGE", "left")
    out = io.BytesIO()
    result = run_stages(toy_repo, 2, out)
    printed = out.getvalue().decode()
    assert result.failed == ["left"]
    assert "left | left: failing on purpose" in printed and "left | failed (exit code 255)" in printed
    assert not (toy_repo / "left.txt").exists() and not (toy_repo / "joined.txt").exists()
    assert "joined" not in result.stage_seconds  # never started: it reads what failed
    assert "stages ran" not in printed


def test_the_stage_order_puts_every_stage_after_those_it_reads(toy_repo):
    graph = read_stage_graph(toy_repo)
    assert graph.order == ["source", "left", "right", "joined"]
    assert graph.upstream["joined"] == {"left", "right"} and graph.changed == set(graph.order)
    assert graph.downstream_counts() == {"source": 3, "left": 1, "right": 1, "joined": 0}
    assert upstream_first(["c", "b", "a"], {"a": set(), "b": {"a"}, "c": {"b", "a"}}) == ["a", "b", "c"]


def test_the_longest_chain_adds_the_seconds_of_stages_that_read_each_other():
    graph = StageGraph(
        ["source", "left", "right", "joined", "alone"],
        {"source": set(), "left": {"source"}, "right": {"source"}, "joined": {"left", "right"}, "alone": set()},
        set(),
    )
    seconds = {"source": 1.0, "left": 2.0, "right": 3.0, "joined": 1.5, "alone": 5.0}
    assert graph.longest_chain(seconds) == (5.5, ["source", "right", "joined"])
    # a stage DVC skipped counts nothing and is not named: the chain names what ran
    assert graph.longest_chain({"left": 2.0, "joined": 0.5, "alone": 1.0}) == (2.5, ["left", "joined"])
    assert graph.longest_chain({"alone": 7.0}) == (7.0, ["alone"])
    assert StageGraph([], {}, set()).longest_chain({}) == (0.0, [])


def test_each_stage_gets_its_share_of_the_cores_for_numbas_threads_all_of_them_alone_unless_the_caller_chose(
    monkeypatch,
):
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
    assert [stage_environment(jobs)["NUMBA_NUM_THREADS"] for jobs in (1, 2, 4, 8)] == ["4", "2", "1", "1"]
    assert stage_environment(2, alone=True)["NUMBA_NUM_THREADS"] == "4"  # nothing else running or ready
    monkeypatch.setenv("NUMBA_NUM_THREADS", "3")
    assert stage_environment(2)["NUMBA_NUM_THREADS"] == "3"
    assert stage_environment(2, alone=True)["NUMBA_NUM_THREADS"] == "3"
