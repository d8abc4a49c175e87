"""The service configuration: one YAML file (or dict) naming the catalog, the log, the store and the experiments.

Validated up front so a typo in a config fails at startup with a message naming the key, not mid-experiment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from botify_lab.formats import arm_name

from .recommenders import RECOMMENDERS

DEFAULT_LOG_MAX_BYTES = 50_000_000
DEFAULT_LOG_BACKUP_COUNT = 1000
# Each rotation renames every kept file (data.json.i -> data.json.i+1) under the log's lock, so a file must hold
# enough lines to pay for that: at least this many bytes per kept file (1 MiB with the default 1000 files, a
# rotation's renames then cost a few microseconds per line).
MIN_LOG_BYTES_PER_BACKUP = 1024
TOP_LEVEL_KEYS = {"catalog", "log_dir", "store", "seed", "clock", "log_max_bytes", "log_backup_count", "experiments"}
# `wall`: events are stamped with the server's clock and their measured latency (the course's log). `simulated`: each
# request carries its simulated time (the X-Botify-Time header, ms since epoch) and latency is not measured (logged
# as 0), so a seeded simulation writes the same log on every run, however the machine is loaded.
CLOCKS = ("wall", "simulated")
ARM_KEYS = {"name", "recommender", "path", "k", "exploration", "params", "data"}


class ConfigError(ValueError):
    """A config that cannot describe a runnable service."""


@dataclass(frozen=True)
class ArmConfig:
    """One arm of an experiment, as its config keys give it.

    `name` (default C, T1, T2, ...), `recommender` (a key of `RECOMMENDERS`), `path` (its data file, for those that
    read one), `k` (toppop's list length) and `exploration` (optional, 0 <= exploration < 1, default 0: the share of
    the arm's /next requests answered by the Random recommender instead of the arm's own, epsilon-greedy, so a model
    retrained on the arm's log also sees tracks the arm would never have served).

    Or `recommender` names a class of one's own (`path/to/file.py:ClassName`, the path relative to the config file,
    or `package.module:ClassName`; see botify.custom): `source` is then the resolved file (or the module's name),
    `params` its constructor's keyword arguments and `data` its data files (name -> resolved path, passed as
    keyword arguments too).
    """

    name: str
    recommender: str
    path: Path | None = None
    k: int | None = None
    exploration: float = 0.0
    source: Path | str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Path] = field(default_factory=dict)

    def describe(self, base_dir: Path | None = None) -> dict[str, Any]:
        """What this arm serves, for GET /experiments; the data path relative to `base_dir` (the config's folder)."""
        description: dict[str, Any] = {"name": self.name, "recommender": self.recommender}
        if self.path is not None:
            description["path"] = str(self.path) if base_dir is None else os.path.relpath(self.path, base_dir)
        if self.k is not None:
            description["k"] = self.k
        if self.exploration > 0:
            description["exploration"] = self.exploration
        if self.params:
            description["params"] = self.params
        if self.data:
            description["data"] = {
                name: str(path) if base_dir is None else os.path.relpath(path, base_dir)
                for name, path in self.data.items()
            }
        return description


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    arms: tuple[ArmConfig, ...]


@dataclass(frozen=True)
class BotifyConfig:
    catalog: Path
    log_dir: Path
    store: str
    seed: int
    clock: str
    log_max_bytes: int
    log_backup_count: int
    experiments: tuple[ExperimentConfig, ...]
    base_dir: Path  # the config file's folder (the cwd for a dict): relative paths resolved against it


def load_config(source: dict | str | Path) -> BotifyConfig:
    """Read a config from a YAML path (relative paths resolve against its folder) or a dict (against the cwd)."""
    if isinstance(source, dict):
        return parse_config(source, Path.cwd())
    path = Path(source)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a YAML mapping")
    return parse_config(raw, path.resolve().parent)


def parse_config(raw: dict, base_dir: Path) -> BotifyConfig:
    unknown = set(raw) - TOP_LEVEL_KEYS
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(unknown)}; known: {sorted(TOP_LEVEL_KEYS)}")
    for key in ("catalog", "experiments"):
        if key not in raw:
            raise ConfigError(f"config needs `{key}`")
    store = raw.get("store", "memory")
    if not isinstance(store, str) or not (store == "memory" or store.startswith(("redis://", "unix://"))):
        raise ConfigError(f"`store` must be `memory` or a redis:// URL, got {store!r}")
    clock = raw.get("clock", "wall")
    if clock not in CLOCKS:
        raise ConfigError(f"`clock` must be one of {', '.join(CLOCKS)}, got {clock!r}")
    experiments = raw["experiments"]
    if not isinstance(experiments, list) or not experiments:
        raise ConfigError("`experiments` must be a non-empty list")
    parsed = tuple(_parse_experiment(item, index, base_dir) for index, item in enumerate(experiments))
    names = [experiment.name for experiment in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"experiment names must be unique, got {names}")
    log_max_bytes = _require_int(raw.get("log_max_bytes", DEFAULT_LOG_MAX_BYTES), "log_max_bytes", minimum=0)
    log_backup_count = _require_int(
        raw.get("log_backup_count", DEFAULT_LOG_BACKUP_COUNT), "log_backup_count", minimum=1
    )
    if 0 < log_max_bytes < MIN_LOG_BYTES_PER_BACKUP * log_backup_count:
        raise ConfigError(
            f"`log_max_bytes` must be 0 (never rotate) or at least {MIN_LOG_BYTES_PER_BACKUP} x `log_backup_count` "
            f"= {MIN_LOG_BYTES_PER_BACKUP * log_backup_count}, got {log_max_bytes}: each rotation renames every "
            "kept file, so smaller files would make rotating the service's bottleneck"
        )
    return BotifyConfig(
        catalog=_resolve(_require_str(raw["catalog"], "catalog"), base_dir),
        log_dir=_resolve(_require_str(raw.get("log_dir", "log"), "log_dir"), base_dir),
        store=store,
        seed=_require_int(raw.get("seed", 0), "seed", minimum=None),
        clock=clock,
        log_max_bytes=log_max_bytes,
        log_backup_count=log_backup_count,
        experiments=parsed,
        base_dir=base_dir,
    )


def _parse_experiment(raw: Any, index: int, base_dir: Path) -> ExperimentConfig:
    where = f"experiments[{index}]"
    if not isinstance(raw, dict) or set(raw) - {"name", "arms"}:
        raise ConfigError(f"{where} must be a mapping with `name` and `arms`")
    name = _require_str(raw.get("name"), f"{where}.name")
    arms = raw.get("arms")
    if not isinstance(arms, list) or not arms:
        raise ConfigError(f"{where} ({name}) needs a list of arms (one arm serves every user, as a rollout does)")
    parsed = tuple(
        _parse_arm(arm, position, f"{where}.arms[{position}]", base_dir) for position, arm in enumerate(arms)
    )
    arm_names = [arm.name for arm in parsed]
    if len(set(arm_names)) != len(arm_names):
        raise ConfigError(f"{where} ({name}) arm names must be unique, got {arm_names}")
    return ExperimentConfig(name=name, arms=parsed)


def _parse_arm(raw: Any, position: int, where: str, base_dir: Path) -> ArmConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping with `recommender`")
    unknown = set(raw) - ARM_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; known: {sorted(ARM_KEYS)}")
    recommender = raw.get("recommender")
    name = _require_str(raw.get("name", arm_name(position)), f"{where}.name")
    if isinstance(recommender, str) and is_custom(recommender):
        return _parse_custom_arm(raw, name, where, base_dir)
    kind = RECOMMENDERS.get(recommender) if isinstance(recommender, str) else None
    if kind is None:
        raise ConfigError(
            f"{where}.recommender must be one of {sorted(RECOMMENDERS)} or a class of your own "
            f"(path/to/file.py:ClassName or package.module:ClassName), got {recommender!r}"
        )
    for key in ("params", "data"):
        if key in raw:
            raise ConfigError(f"{where}: `{key}` is only for a recommender class of your own, not {recommender}")
    path = None
    if kind.needs_path:
        path = _resolve(_require_str(raw.get("path"), f"{where}.path"), base_dir)
    elif "path" in raw:
        raise ConfigError(f"{where}: recommender {recommender} takes no `path`")
    k = None
    if kind.takes_k:
        k = _require_int(raw.get("k"), f"{where}.k", minimum=1)
    elif "k" in raw:
        takers = sorted(name for name, other in RECOMMENDERS.items() if other.takes_k)
        raise ConfigError(f"{where}: `k` is only for {', '.join(takers)}")
    exploration = _require_share(raw.get("exploration", 0.0), f"{where}.exploration")
    return ArmConfig(name=name, recommender=recommender, path=path, k=k, exploration=exploration)


def is_custom(recommender: str) -> bool:
    """Whether a config's `recommender` names a class (`file.py:Class`, `module:Class`) rather than a built-in."""
    return ":" in recommender


def _parse_custom_arm(raw: dict, name: str, where: str, base_dir: Path) -> ArmConfig:
    """An arm serving a class of one's own: where the class lives, its params and its data files (not imported
    here: botify.custom builds it when the service opens)."""
    recommender = raw["recommender"]
    location, _, class_name = recommender.rpartition(":")
    if not location or not class_name.isidentifier():
        raise ConfigError(
            f"{where}.recommender must look like path/to/file.py:ClassName or package.module:ClassName, "
            f"got {recommender!r}"
        )
    for key in ("path", "k", "exploration"):
        if key in raw:
            raise ConfigError(f"{where}: `{key}` is only for the built-in recommenders; give a class `params`")
    if location.endswith(".py") or "/" in location:
        source: Path | str = _resolve(location, base_dir)
    elif all(part.isidentifier() for part in location.split(".")):
        source = location
    else:
        raise ConfigError(f"{where}.recommender: {location!r} is neither a .py file nor a module name")
    params = raw.get("params", {})
    data = raw.get("data", {})
    for key, value in (("params", params), ("data", data)):
        if not isinstance(value, dict) or not all(isinstance(item, str) and item.isidentifier() for item in value):
            raise ConfigError(f"{where}.{key} must map argument names to values, got {value!r}")
    shared = sorted(set(params) & set(data))
    if shared:
        raise ConfigError(f"{where}: {shared} given both in `params` and in `data`")
    files = {key: _resolve(_require_str(value, f"{where}.data.{key}"), base_dir) for key, value in data.items()}
    return ArmConfig(name=name, recommender=recommender, source=source, params=dict(params), data=files)


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else (base_dir / path).resolve()


def _require_str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"`{key}` must be a non-empty string, got {value!r}")
    return value


def _require_int(value: Any, key: str, *, minimum: int | None) -> int:
    if type(value) is not int or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ConfigError(f"`{key}` must be an integer{bound}, got {value!r}")
    return value


def _require_share(value: Any, key: str) -> float:
    if type(value) not in (int, float) or not 0 <= value < 1:  # NaN fails the comparison
        raise ConfigError(f"`{key}` must be a number >= 0 and < 1 (a share of requests), got {value!r}")
    return float(value)
