"""Serving an experiment to simulated traffic: the one way every stage that needs traffic gets it.

`run_experiment` writes a service config, serves it to the seeded simulator and leaves the event log (the result),
the config and the simulator's summary in one folder. Two transports give the same log, byte for byte:
- `http`: the real botify service on a free loopback port for exactly as long as the simulator drives it over
  HTTP, stopped whatever happens (the course's way, and what keeps the service exercised);
- `in_process`: the service's request logic (`botify.service.Service`: experiments, assignment, recommenders, the
  event-log writer) called by the simulator in its own process, without sockets, about ten times faster. Each
  simulation process serves its own users from its own part of the log folder; the parts are merged afterwards.

Everything it leaves is the same on every run of the same seed, so DVC records the same hashes in every clone: the
service runs on the simulated clock (each event logged at its simulated time, latency not measured), the log is put
in one order afterwards (by time, then user) whatever the interleaving of processes and connections was, and the
summary keeps only the simulation's numbers (no port, no seconds). Latency is the service's speed, not the
experiment's outcome: `bench/service_load.py` measures it, and a service on the wall clock logs it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

from botify.service import FAILED_FILE_NAME, BadRequest, RecommenderFailed, Service, ServiceUnavailable
from botify_lab.formats import LOG_FILE_NAME, atomic_write_bytes, log_files
from botify_lab.pipeline import layout
from botify_lab.pipeline.params import TRANSPORTS, CalibrateParams, FidelityParams, Params, TrafficParams
from sim.agents import InvalidAnswer
from sim.agents import ServiceUnavailable as Unreachable

# What the simulator's summary says about this particular run rather than the simulation (left out of summary.json).
RUN_SPECIFIC_SUMMARY_KEYS = ("url", "seconds", "steps_per_second")
PARTS_DIR = ".in-process-parts"  # beside log/ while an in-process run lasts


@dataclass(frozen=True)
class Traffic:
    """Seeded simulated traffic: `days` x `episodes` sessions from `processes` worker processes, served over
    `transport` ("http": each process holds `connections` keep-alive connections; "in_process": no sockets).
    The seed also seeds the service's own random choices."""

    episodes: int
    seed: int
    days: int = 1
    first_day: int = 0  # continue the same seed's traffic at this day (the loop of days: rounds after the first)
    processes: int = 1
    connections: int = 4
    transport: str = "http"

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")

    @classmethod
    def from_params(
        cls,
        section: TrafficParams | CalibrateParams | FidelityParams,
        params: Params,
        *,
        seed: int | None = None,
        episodes: int | None = None,
    ):
        """Traffic of a params.yaml section (episodes, days, processes, transport) with the shared `http:`
        settings; `seed` and `episodes` replace the section's for stages that run several seeds or sizes."""
        return cls(
            episodes=section.episodes if episodes is None else episodes,
            seed=params.seed if seed is None else seed,
            days=getattr(section, "days", 1),
            processes=section.processes,
            connections=params.http.connections,
            transport=section.transport,
        )


class InProcessService:
    """The service's request logic as the simulator's recommender, one `Service` per simulation process.

    Process i serves from `<parts>/<i>` (a log folder of its own with its own request counters): a user's sessions
    all run in one process, so each part sees exactly the requests the whole service would see from those users,
    and `merge_parts` puts the parts together as one service's folder. Days reopen the same part, so counters
    continue as they do in a service that runs through the days.
    """

    def __init__(self, config_path: Path, parts_dir: Path):
        self.config_path = Path(config_path)
        self.parts_dir = Path(parts_dir)

    def for_process(self, index: int, clock) -> _ServedInProcess:
        from botify.config import load_config

        config = load_config(self.config_path)
        return _ServedInProcess(dataclasses.replace(config, log_dir=self.parts_dir / str(index)), clock)


class _ServedInProcess:
    """One process's service: what `POST /next` and `POST /last` do, minus HTTP, with the simulated time."""

    def __init__(self, config, clock):
        # A stage that fails is rerun from nothing, so the counters journal (one write per /next) would guard nothing.
        self._service = Service.open(config, journal_counters=False)
        self._clock = clock
        self._time_ms = 0

    def at(self, day: int, episode: int, step: int) -> None:
        self._time_ms = self._clock.time_ms(day, episode, step)

    def recommend(self, user: int, track: int, time: float) -> int:
        try:
            return self._service.next_track(int(user), int(track), float(time), timestamp=self._time_ms)
        except (BadRequest, RecommenderFailed, ServiceUnavailable) as error:
            raise _as_seen_over_http("/next", error) from None

    def end_session(self, user: int, track: int, time: float) -> None:
        try:
            self._service.last_track(int(user), int(track), float(time), timestamp=self._time_ms)
        except (BadRequest, ServiceUnavailable) as error:
            raise _as_seen_over_http("/last", error) from None

    def close(self) -> None:
        self._service.close()


def _as_seen_over_http(call: str, error: Exception) -> Exception:
    """The service's refusal as the simulator knows it over HTTP: a 400 is an invalid answer, so is a 500 (a
    recommender of one's own that failed), a 503 an outage."""
    if isinstance(error, BadRequest):
        return InvalidAnswer(f"{call} refused the request: {error}")
    if isinstance(error, RecommenderFailed):
        return InvalidAnswer(f"{call} failed: {error}")
    return Unreachable(f"{call}: {error}")


def merge_parts(parts_dir: Path, log_dir: Path) -> None:
    """The in-process parts as one stopped service's log folder: every part's lines in the canonical order, the
    counters of all users (disjoint between parts) in one file, so are the sessions a recommender of one's own
    reads and the requests it failed, and the folder's (released) lock files; the parts are removed."""
    from botify.eventlog import FOLDER_LOCK_NAME, WRITE_LOCK_NAME
    from botify.store import COUNTERS_FILE_NAME, SESSIONS_FILE_NAME, MemoryStore

    parts = sorted(path for path in Path(parts_dir).iterdir() if path.is_dir())
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    put_log_in_canonical_order(log_dir, [path for part in parts for path in log_files(part)])
    MemoryStore.merged(log_dir / COUNTERS_FILE_NAME, [part / COUNTERS_FILE_NAME for part in parts]).save()
    sessions = [orjson.loads(path.read_bytes())["users"] for path in _present(parts, SESSIONS_FILE_NAME)]
    if sessions:
        users = sorted((user for part in sessions for user in part.items()), key=lambda item: int(item[0]))
        atomic_write_bytes(log_dir / SESSIONS_FILE_NAME, orjson.dumps({"users": dict(users)}))
    failed = [line for path in _present(parts, FAILED_FILE_NAME) for line in path.read_bytes().splitlines()]
    if failed:
        events = sorted(failed, key=lambda line: canonical_key(orjson.loads(line)))
        atomic_write_bytes(log_dir / FAILED_FILE_NAME, b"".join(line + b"\n" for line in events))
    for name in (FOLDER_LOCK_NAME, WRITE_LOCK_NAME):
        (log_dir / name).touch()
    shutil.rmtree(parts_dir)


def _present(parts: list[Path], name: str) -> list[Path]:
    return [part / name for part in parts if (part / name).is_file()]


def _relative(path: Path | str, config_dir: Path) -> str:
    return os.path.relpath(Path(path).resolve(), config_dir.resolve())


def _arm_in_config(arm: dict, config_dir: Path) -> dict:
    """An arm with its files relative to the config's folder, against which the service resolves them: a built-in's
    `path`, and a class of one's own's file and `data`."""
    arm = dict(arm)
    if "path" in arm:
        arm["path"] = _relative(arm["path"], config_dir)
    file, _, class_name = arm["recommender"].rpartition(":")
    if file.endswith(".py"):
        arm["recommender"] = f"{_relative(file, config_dir)}:{class_name}"
    if "data" in arm:
        arm["data"] = {name: _relative(data, config_dir) for name, data in arm["data"].items()}
    return arm


def serving_arm(params: Params, name: str) -> dict:
    """The arm that serves `name` of params.yaml: the Contextual recommender on a model's exported lists, or a
    recommender of one's own (`recommenders:`) with its params and data files."""
    if name in params.models:
        return {"recommender": "contextual", "path": str(layout.recs_file(name))}
    spec = params.recommenders[name]
    return {
        "recommender": f"{spec.file}:{spec.class_name}",
        **({"params": dict(spec.params)} if spec.params else {}),
        **({"data": dict(spec.data)} if spec.data else {}),
    }


def write_service_config(
    path: Path, *, catalog: Path, log_dir: Path, seed: int, experiments: list[dict], store: str = "memory"
) -> Path:
    """Write a botify config whose paths are relative to its folder, so the file is the same in every clone."""
    path = Path(path)
    config_dir = path.parent
    config_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "catalog": _relative(catalog, config_dir),
        "log_dir": _relative(log_dir, config_dir),
        "store": store,
        "seed": int(seed),
        "clock": "simulated",
        "experiments": [
            {
                "name": experiment["name"],
                "arms": [_arm_in_config(arm, config_dir) for arm in experiment["arms"]],
            }
            for experiment in experiments
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_experiment(world_dir: Path | str, experiments: list[dict], traffic: Traffic, out_dir: Path | str) -> Path:
    """Serve `experiments` (botify config entries: name and arms) to `traffic` on the world; returns the log folder.

    `out_dir` receives `service.yaml`, `log/` and `summary.json` (the simulator's per-day table as JSON). Any
    answer the simulator cannot play stops the run with an error (strict), since a pipeline must not analyse a
    broken experiment.
    """
    from botify_lab.pipeline.outputs import show_progress
    from sim.run import simulate

    out_dir = Path(out_dir)
    config = write_service_config(
        out_dir / "service.yaml",
        catalog=Path(world_dir) / "tracks.json",
        log_dir=out_dir / "log",
        seed=traffic.seed,
        experiments=experiments,
    )
    run = dict(
        episodes=traffic.episodes,
        seed=traffic.seed,
        days=traffic.days,
        first_day=traffic.first_day,
        processes=traffic.processes,
        strict=True,
        progress=show_progress(),
    )
    if traffic.transport == "http":
        from botify.launch import served

        with served(config) as url:
            summary = simulate(world_dir, agent="http", url=url, connections=traffic.connections, **run)
        put_log_in_canonical_order(out_dir / "log")
    else:
        parts = out_dir / PARTS_DIR
        summary = simulate(world_dir, agent=InProcessService(config, parts), **run)
        merge_parts(parts, out_dir / "log")
    simulation = {key: value for key, value in summary.items() if key not in RUN_SPECIFIC_SUMMARY_KEYS}
    (out_dir / "summary.json").write_bytes(orjson.dumps(simulation, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return out_dir / "log"


def canonical_key(event: dict) -> tuple[int, int]:
    """Where an event stands in a log that does not depend on scheduling: by time, then user."""
    return event["timestamp"], event["user"]


def put_log_in_canonical_order(log_dir: Path | str, sources: list[Path] | None = None) -> None:
    """Rewrite a stopped service's log as one file, its lines sorted by (timestamp, user), each line unchanged.

    `sources` are the log files to read in writing order (default: the folder's own, which the one file replaces).
    The sort is stable and a user's requests are never concurrent, so each user's events keep the order the service
    logged them in; only the interleaving of different users (which connection or process got there first) goes.
    """
    log_dir = Path(log_dir)
    files = log_files(log_dir) if sources is None else sources
    lines = [line for path in files for line in path.read_bytes().splitlines(keepends=True)]
    keys = [canonical_key(orjson.loads(line)) for line in lines]
    order = sorted(range(len(lines)), key=keys.__getitem__)
    scratch = log_dir / f".{LOG_FILE_NAME}.canonical"
    with open(scratch, "wb") as output:
        output.writelines(lines[index] for index in order)
    os.replace(scratch, log_dir / LOG_FILE_NAME)
    for path in files:
        if path.parent == log_dir and path.name != LOG_FILE_NAME:
            path.unlink()
