"""Run the pipeline's stages several at a time, each as `dvc repro --single-item <stage>`.

`dvc repro` runs one stage after another, and most stages keep one core busy (a training, a LightFM or ALS fit, a
notebook's analysis), so on two cores half the machine idled through a full run. DVC allows two `dvc repro` of
different stages in one repository at once: it takes its repository lock only to check and record a stage, and
releases it while the stage's command runs (`--wait-for-lock` makes the other wait for those moments). So this
scheduler reads the stage graph from DVC, asks DVC once which stages changed, and starts a stage as soon as every
stage it depends on has finished, up to `jobs` at a time, the stage with the most stages waiting on it first. A
stage that did not change is started only if a stage it depends on ran (DVC then decides whether its inputs moved).
Each stage's outputs depend on its inputs alone, so the bytes, and dvc.lock, are those of a plain `dvc repro`.

Each line a stage prints comes prefixed with the stage's name. A failed stage stops the run: no new stage starts,
the running ones finish, and the failure is named at the end.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# DVC's closing hints (stage dvc.lock with git, turn on auto-staging, push to a remote): this project commits
# dvc.lock by hand and has no remote by default, so they are noise on every run.
DVC_HINTS = (
    b"To track the changes with git, run:",
    b"git add ",
    b"To enable auto staging, run:",
    b"dvc config core.autostage true",
    b"Use `dvc push` to send your updates to remote storage.",
)
RAN_MARK = b"Running stage '"
LOCK_FILE = "dvc.lock"
MAX_DEFAULT_JOBS = 4  # each stage may itself use two processes (the simulator's) or torch's threads


def default_jobs() -> int:
    """One stage per core this process may use, at most MAX_DEFAULT_JOBS."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_DEFAULT_JOBS))


def dvc_environment() -> dict:
    """DVC from this venv with analytics off and a shell for the stages' commands."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "SHELL": "/bin/bash"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def stage_environment(jobs: int, *, alone: bool = False) -> dict:
    """`dvc_environment` with each stage's share of the cores for numba's threads (LazyAdam's steps), every core for a
    stage that starts `alone` (nothing else running or ready: the loop of days' last round, which every later stage
    waits on), unless the caller set NUMBA_NUM_THREADS. Alone, a training's step runs 1.3 to 1.4 times as fast on two
    threads as on one (the same bits); beside another training on 2 cores, no faster (4.5-5.2 ms against 4.5-4.8
    ms), and in a full run the sweep's variants, two at a time, took 118-125 s each on two threads against 98-110 s
    on one in the run before."""
    env = dvc_environment()
    cores = len(os.sched_getaffinity(0))
    env.setdefault("NUMBA_NUM_THREADS", str(cores if alone else max(1, cores // jobs)))
    return env


@dataclass(frozen=True)
class StageGraph:
    """The pipeline's stages in dvc.yaml order, each with the stages it reads from, and those DVC finds changed."""

    order: list[str]
    upstream: dict[str, set[str]]
    changed: set[str]

    def downstream_counts(self) -> dict[str, int]:
        """How many stages wait, directly or not, on each stage."""
        below: dict[str, set[str]] = {}
        for name in reversed(self.order):  # dvc.yaml order lists a stage after those it reads from
            below.setdefault(name, set())
            for parent in self.upstream[name]:
                below.setdefault(parent, set()).update({name, *below[name]})
        return {name: len(below[name]) for name in self.order}

    def longest_chain(self, seconds: dict[str, float]) -> tuple[float, list[str]]:
        """The chain of stages, each reading from the one before it, whose `seconds` add up to the most: stages that
        take those seconds end no sooner, however many run at once. A stage missing from `seconds` (DVC skipped it)
        counts nothing and is left out of the chain."""
        longest: dict[str, tuple[float, list[str]]] = {}
        for name in self.order:  # every stage after those it reads from
            parents = (longest[parent] for parent in self.upstream[name])
            total, chain = max(parents, key=lambda chain: chain[0], default=(0.0, []))
            longest[name] = (total + seconds.get(name, 0.0), [*chain, name])
        total, chain = max(longest.values(), key=lambda chain: chain[0], default=(0.0, []))
        return round(total, 1), [name for name in chain if name in seconds]


def read_stage_graph(root: Path) -> StageGraph:
    """The stage graph and the changed stages, from DVC's own index and status (data.dvc, made by the bootstrap
    before any stage, is left out)."""
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    # DVC names a stage relative to the working directory; its index warns of its own use of a deprecated API
    with contextlib.chdir(root), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        repo = Repo(str(root))
        try:
            graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
            stages = [stage for stage in repo.index.stages if isinstance(stage, PipelineStage)]
            upstream = {
                stage.addressing: {dep.addressing for dep in graph.successors(stage) if isinstance(dep, PipelineStage)}
                for stage in stages
            }
            changed = set(repo.status())
        finally:
            repo.close()
    return StageGraph(upstream_first([stage.addressing for stage in stages], upstream), upstream, changed)


def upstream_first(order: list[str], upstream: dict[str, set[str]]) -> list[str]:
    """`order` rearranged so that every stage follows those it reads from, otherwise as it was (DVC's index lists
    stages file by file)."""
    position = {name: index for index, name in enumerate(order)}
    ordered: list[str] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name not in placed:
            placed.add(name)
            for parent in sorted(upstream[name], key=position.__getitem__):
                place(parent)
            ordered.append(name)

    for name in order:
        place(name)
    return ordered


@dataclass
class StageRun:
    process: subprocess.Popen
    started: float
    ran: bool = False  # DVC ran its command (it may find the stage unchanged and skip it)


def forward_lines(name: str, stream: BinaryIO, lines: queue.Queue) -> None:
    """Put each whole line of a stage's output on the queue (a progress bar's redraws reduced to its last state),
    then None when the stage closes its output."""
    partial = b""
    while chunk := stream.read1(65536):
        partial += chunk
        *whole, partial = partial.split(b"\n")
        for line in whole:
            lines.put((name, line.rsplit(b"\r", 1)[-1]))
    if partial.strip():
        lines.put((name, partial.rsplit(b"\r", 1)[-1]))
    lines.put((name, None))


class Scheduler:
    def __init__(self, root: Path, jobs: int, out: BinaryIO) -> None:
        self.root, self.jobs, self.out = root, jobs, out
        self.lines: queue.Queue = queue.Queue()
        self.running: dict[str, StageRun] = {}
        self.ran: dict[str, float] = {}  # the stages DVC ran (not skipped), each with its seconds
        self.failed: list[str] = []

    def write(self, text: bytes) -> None:
        self.out.write(text + b"\n")
        self.out.flush()

    def start(self, name: str, *, alone: bool = False) -> None:
        command = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", name]
        environment = stage_environment(self.jobs, alone=alone)
        process = subprocess.Popen(
            command, cwd=self.root, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.running[name] = StageRun(process, time.monotonic())
        threading.Thread(target=forward_lines, args=(name, process.stdout, self.lines), daemon=True).start()

    def handle(self, name: str, line: bytes | None) -> None:
        run = self.running[name]
        if line is not None:
            stripped = line.strip()
            if stripped.startswith(DVC_HINTS) or not stripped:
                return
            run.ran |= stripped.startswith(RAN_MARK)
            self.write(name.encode() + b" | " + line)
            return
        code = run.process.wait()
        del self.running[name]
        seconds = time.monotonic() - run.started
        if code != 0:
            self.failed.append(name)
            self.write(f"{name} | failed (exit code {code}) after {seconds:.1f} s".encode())
            return
        if run.ran:
            self.ran[name] = round(seconds, 1)
            self.write(f"{name} | done in {seconds:.1f} s".encode())

    def run(self, graph: StageGraph) -> None:
        waiting_on_it = graph.downstream_counts()
        position = {name: index for index, name in enumerate(graph.order)}
        pending = set(graph.order)
        finished: set[str] = set()
        try:
            while pending or self.running:
                ready = [name for name in pending if graph.upstream[name] <= finished]
                for name in sorted(ready, key=lambda stage: (-waiting_on_it[stage], position[stage])):
                    if self.failed:
                        break
                    if name not in graph.changed and not graph.upstream[name] & self.ran.keys():
                        pending.discard(name)  # unchanged, and nothing it reads from ran: DVC would skip it
                        finished.add(name)
                        continue
                    if len(self.running) < self.jobs:
                        pending.discard(name)
                        others_ready = any(other in pending for other in ready)
                        self.start(name, alone=not self.running and not others_ready)
                if self.failed and not self.running:
                    return
                if not self.running:
                    continue  # skipped stages may have made others ready
                name, line = self.lines.get()
                self.handle(name, line)
                if line is None and name not in self.failed:
                    finished.add(name)
        except KeyboardInterrupt:
            for run in self.running.values():
                run.process.wait()
            raise


@dataclass(frozen=True)
class StagesRun:
    stages: int
    seconds: float
    stage_seconds: dict[str, float]  # the stages that ran, each from its start to its end
    failed: list[str]
    longest_chain: list[str]  # what bounds the run however many cores (`StageGraph.longest_chain` of the seconds)
    longest_chain_seconds: float


def locked_stages(root: Path) -> list[str]:
    """The stages dvc.lock records, in its order."""
    from dvc.utils.serialize import load_yaml

    lock = root / LOCK_FILE
    return list((load_yaml(lock) or {}).get("stages", {})) if lock.exists() else []


def order_new_lock_entries(root: Path, before: list[str], order: list[str]) -> None:
    """DVC appends a stage new to dvc.lock as the stage ends, so stages that ran at once would land in an order of
    chance: put those after the entries that were there before, in the scheduler's order (as DVC writes it)."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(root / LOCK_FILE) as lock:
        entries = lock.get("stages", {})
        new = [name for name in entries if name not in before]
        if not new:
            return
        rank = {name: index for index, name in enumerate(order)}
        kept = {name: entries[name] for name in entries if name in before}
        added = {name: entries[name] for name in sorted(new, key=lambda name: rank.get(name, len(rank)))}
        entries.clear()
        entries.update({**kept, **added})


def run_stages(root: Path, jobs: int, out: BinaryIO) -> StagesRun:
    """Run every stage that needs it, `jobs` at a time."""
    started = time.monotonic()
    graph = read_stage_graph(root)
    before = locked_stages(root)
    scheduler = Scheduler(root, jobs, out)
    scheduler.run(graph)
    if scheduler.ran:
        order_new_lock_entries(root, before, graph.order)
    seconds = time.monotonic() - started
    if not scheduler.failed:
        ran = len(scheduler.ran)
        summary = f"{ran} of {len(graph.order)} stages ran, {jobs} at a time, in {seconds:.1f} s"
        scheduler.write((summary if ran else "Data and pipelines are up to date.").encode())
    chain_seconds, chain = graph.longest_chain(scheduler.ran)
    return StagesRun(len(graph.order), round(seconds, 1), scheduler.ran, scheduler.failed, chain, chain_seconds)
