"""Serve an experiment with the real botify service and drive it with the seeded simulator over HTTP.

Stages and notebooks share this so that every simulated A/B test is run the same way: a config written from
params, the service on a free loopback port for exactly as long as the simulation lasts, and the log as the result.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml


def arm_config(arm: dict, config_dir: Path) -> dict:
    """One arm as the service reads it, with any data file made relative to the config's folder."""
    entry = dict(arm)
    if "path" in entry:
        entry["path"] = os.path.relpath(Path(entry["path"]).resolve(), config_dir.resolve())
    return entry


def write_service_config(
    path: Path,
    *,
    catalog: Path,
    log_dir: Path,
    seed: int,
    experiments: list[dict],
    store: str = "memory",
) -> Path:
    """Write a botify config whose relative paths keep the output identical in every clone."""
    path = Path(path)
    config_dir = path.parent
    config_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "catalog": os.path.relpath(Path(catalog).resolve(), config_dir.resolve()),
        "log_dir": os.path.relpath(Path(log_dir).resolve(), config_dir.resolve()),
        "store": store,
        "seed": int(seed),
        "experiments": [
            {"name": experiment["name"], "arms": [arm_config(arm, config_dir) for arm in experiment["arms"]]}
            for experiment in experiments
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def serve_and_simulate(
    world_dir: Path,
    config_path: Path,
    *,
    episodes: int,
    seed: int,
    days: int = 1,
    processes: int = 1,
    workers: int = 1,
    summary_path: Path | None = None,
) -> dict:
    """Run the seeded simulation against the served config; the service always stops, whatever happens."""
    import orjson
    from botify.launch import served
    from sim.run import simulate

    with served(config_path, workers=workers) as url:
        summary = simulate(
            world_dir, agent="http", url=url, episodes=episodes, seed=seed, days=days, processes=processes,
            strict=True,
        )
    if summary_path is not None:
        Path(summary_path).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return summary
