"""Serving an experiment to simulated traffic: the one way every stage that needs traffic gets it.

`run_experiment` writes a service config, starts the real botify service on a free loopback port for exactly as
long as the seeded simulator drives it over HTTP, stops it whatever happens, and leaves the event log (the result),
the config and the simulator's summary in one folder.

Everything it leaves is the same on every run of the same seed, so DVC records the same hashes in every clone: the
service runs on the simulated clock (each event logged at its simulated time, latency not measured), the log is put
in one order afterwards (by time, then user) whatever the interleaving of processes and connections was, and the
summary keeps only the simulation's numbers (no port, no seconds). Latency is the service's speed, not the
experiment's outcome: `bench/service_load.py` measures it, and a service on the wall clock logs it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

from botify_lab.formats import LOG_FILE_NAME, log_files

# What the simulator's summary says about this particular run rather than the simulation (left out of summary.json).
RUN_SPECIFIC_SUMMARY_KEYS = ("url", "seconds", "steps_per_second")


@dataclass(frozen=True)
class Traffic:
    """Seeded simulated traffic: `days` x `episodes` sessions from `processes` worker processes, each holding
    `connections` keep-alive connections to the service. The seed also seeds the service's own random choices."""

    episodes: int
    seed: int
    days: int = 1
    processes: int = 1
    connections: int = 4

    @classmethod
    def from_params(cls, section: dict, params: dict, *, seed: int | None = None, episodes: int | None = None):
        """Traffic of a params.yaml section (episodes, days, processes) with the shared `http:` settings."""
        return cls(
            episodes=int(section["episodes"] if episodes is None else episodes),
            seed=int(params["seed"] if seed is None else seed),
            days=int(section.get("days", 1)),
            processes=int(section["processes"]),
            connections=int(params["http"]["connections"]),
        )


def _relative(path: Path | str, config_dir: Path) -> str:
    return os.path.relpath(Path(path).resolve(), config_dir.resolve())


def write_service_config(path: Path, *, catalog: Path, log_dir: Path, seed: int, experiments: list[dict],
                         store: str = "memory") -> Path:
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
                "arms": [
                    {**arm, "path": _relative(arm["path"], config_dir)} if "path" in arm else dict(arm)
                    for arm in experiment["arms"]
                ],
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
    from botify.launch import served
    from botify_lab.pipeline.outputs import show_progress
    from sim.run import simulate

    out_dir = Path(out_dir)
    config = write_service_config(out_dir / "service.yaml", catalog=Path(world_dir) / "tracks.json",
                                  log_dir=out_dir / "log", seed=traffic.seed, experiments=experiments)
    with served(config) as url:
        summary = simulate(world_dir, agent="http", url=url, episodes=traffic.episodes, seed=traffic.seed,
                           days=traffic.days, processes=traffic.processes, connections=traffic.connections,
                           strict=True, progress=show_progress())
    put_log_in_canonical_order(out_dir / "log")
    simulation = {key: value for key, value in summary.items() if key not in RUN_SPECIFIC_SUMMARY_KEYS}
    (out_dir / "summary.json").write_bytes(orjson.dumps(simulation, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return out_dir / "log"


def put_log_in_canonical_order(log_dir: Path | str) -> None:
    """Rewrite a stopped service's log as one file, its lines sorted by (timestamp, user), each line unchanged.

    The sort is stable and a user's requests are never concurrent, so each user's events keep the order the service
    logged them in; only the interleaving of different users (which connection or process got there first) goes.
    """
    log_dir = Path(log_dir)
    files = log_files(log_dir)
    lines = [line for path in files for line in path.read_bytes().splitlines(keepends=True)]
    keys = []
    for line in lines:
        event = orjson.loads(line)
        keys.append((event["timestamp"], event["user"]))
    order = sorted(range(len(lines)), key=keys.__getitem__)
    scratch = log_dir / f".{LOG_FILE_NAME}.canonical"
    with open(scratch, "wb") as output:
        output.writelines(lines[index] for index in order)
    os.replace(scratch, log_dir / LOG_FILE_NAME)
    for path in files:
        if path.name != LOG_FILE_NAME:
            path.unlink()
