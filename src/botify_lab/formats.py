"""The contracts every part of the project shares: the catalog file, the event log and the A/B assignment.

The service writes the log, the simulator reads the catalog, the research code reads both; each imports the one
definition here instead of keeping its own copy, so a change of format is made once. This module imports nothing
from the service, the simulator or the research code.

- Catalog (`tracks.json`): JSON Lines, one `{"artist": str, "title": str, "track": int}` per track, ids 0..N-1.
- Event log: JSON Lines in a folder, `data.json` plus rotated `data.json.1` (newest) ... `data.json.K` (oldest),
  the naming of Python's RotatingFileHandler; one line per `/next` or `/last` call with the keys of `EVENT_KEYS`.
- A/B assignment: a user's arm in an experiment of k arms is
  `murmur3_32(str(user), seed=unsigned murmur3_32(name)) mod k`, arms named C, T1, T2, ... in order.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import mmh3
import msgspec
import orjson

CATALOG_KEYS = ("artist", "title", "track")
LOG_FILE_NAME = "data.json"
EVENT_KEYS = ("message", "timestamp", "user", "track", "time", "latency", "recommendation", "experiments")
# Additive: the probability with which the serving recommender drew its recommendation (what off-policy evaluation
# weighs by). Every "next" line the service writes carries it last; the course's logs and older ones do not.
PROPENSITY_KEY = "propensity"
MESSAGES = ("next", "last")
CONTROL_ARM = "C"
_ROTATED_LOG = re.compile(re.escape(LOG_FILE_NAME) + r"\.(\d+)")
_EVENT_KEY_SET = frozenset(EVENT_KEYS)
_NEXT_KEYS_WITH_PROPENSITY = (*EVENT_KEYS, PROPENSITY_KEY)


def uniform_over(tracks: Sequence[int]) -> dict[int, float]:
    """Track -> probability of a uniform draw from a recommender's list (a list may hold a track more than once): the
    propensity a "next" line logs, and what off-policy evaluation replays."""
    return {candidate: count / len(tracks) for candidate, count in Counter(tracks).items()}


class FormatError(ValueError):
    """A shared file that breaks its format; the message names the file and line."""


# ---------------------------------------------------------------------------------------------------------------
# JSON Lines and atomic writes


def iter_json_lines(path: Path | str, error: type[Exception] = FormatError) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line; a `.gz` file is read as gzip.

    A line that is not JSON raises `error` naming file:line, so nothing is silently dropped.
    """
    path = Path(path)
    try:
        handle = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as problem:
        raise error(f"cannot read {path}: {problem}") from problem
    with handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, orjson.loads(line)
            except orjson.JSONDecodeError as problem:
                raise error(f"{path}:{line_number}: not valid JSON ({problem})") from None


def atomic_write_bytes(path: Path | str, payload: bytes) -> Path:
    """Write via a temporary file in the same folder and rename, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        try:
            handle.write(payload)
        except BaseException:
            os.unlink(handle.name)
            raise
    os.replace(handle.name, path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# The catalog


def catalog_row_problem(row: object) -> str | None:
    """Why a parsed catalog line is not a track row, or None when it is one."""
    if type(row) is not dict:
        return "not a JSON object"
    if type(row.get("track")) is not int or row["track"] < 0:
        return "a catalog row needs a non-negative integer `track`"
    if not isinstance(row.get("artist"), str) or not isinstance(row.get("title"), str):
        return "a catalog row needs string `artist` and `title`"
    return None


def read_catalog_rows(path: Path | str, error: type[Exception] = FormatError) -> list[dict]:
    """The catalog's rows in id order; ids must be exactly 0..N-1, each once (other keys are kept as they are)."""
    rows: list[dict | None] = []
    for line_number, row in iter_json_lines(path, error):
        problem = catalog_row_problem(row)
        if problem is not None:
            raise error(f"{path}:{line_number}: {problem}")
        track = row["track"]
        if track >= len(rows):
            rows.extend([None] * (track + 1 - len(rows)))
        if rows[track] is not None:
            raise error(f"{path}:{line_number}: duplicate track id {track}")
        rows[track] = row
    if not rows:
        raise error(f"{path}: empty catalog")
    if None in rows:
        raise error(f"{path}: track ids must be 0..{len(rows) - 1}; id {rows.index(None)} is missing")
    return rows  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# The event log


def rotated_log_name(index: int) -> str:
    """Name of the index-th rotated file (1 = the newest rotated file)."""
    return f"{LOG_FILE_NAME}.{index}"


def log_files(log_dir: Path | str) -> list[Path]:
    """The log's files in writing order: `data.json.K` (oldest) ... `data.json.1`, then `data.json`.

    Rotated indices sort numerically (10 is older than 9); gzipped copies (`data.json.gz`, `data.json.3.gz`) count
    as the file they compress. Returns an empty list for a folder with no log file.
    """
    log_dir = Path(log_dir)
    rotated, current = [], []
    for path in log_dir.iterdir():
        name = path.name[:-3] if path.name.endswith(".gz") else path.name
        match = _ROTATED_LOG.fullmatch(name)
        if match and path.is_file():
            rotated.append((int(match.group(1)), path))
        elif name == LOG_FILE_NAME and path.is_file():
            current.append(path)
    return [path for _, path in sorted(rotated, key=lambda item: -item[0])] + sorted(current)


def is_int(value: object) -> bool:
    return type(value) is int


def is_finite_number(value: object) -> bool:
    return (type(value) is int or type(value) is float) and math.isfinite(value)


def _written_by_the_service(row: dict) -> bool:
    """A quick yes for an event exactly as the service writes it (keys in the schema's order, floats as floats): one
    pass with no calls, since a reader checks every line (a million lines per read). Anything else, valid or not,
    gets False and the full check."""
    keys = tuple(row)
    if keys == _NEXT_KEYS_WITH_PROPENSITY:
        propensity = row[PROPENSITY_KEY]
        if type(propensity) is not float or not 0.0 < propensity <= 1.0 or row["message"] != "next":
            return False
    elif keys != EVENT_KEYS:
        return False
    time, latency, recommendation = row["time"], row["latency"], row["recommendation"]
    if (
        type(row["timestamp"]) is not int
        or type(row["user"]) is not int
        or type(row["track"]) is not int
        or type(time) is not float
        or not -math.inf < time < math.inf
        or type(latency) is not float
        or not -math.inf < latency < math.inf
        or type(row["experiments"]) is not dict
    ):
        return False
    message = row["message"]
    if not ((message == "next" and type(recommendation) is int) or (message == "last" and recommendation is None)):
        return False
    for name, arm in row["experiments"].items():
        if type(name) is not str or type(arm) is not str:
            return False
    return True


class TypedEvent(msgspec.Struct, forbid_unknown_fields=True):
    """An event line decoded straight into typed fields (the keys of `EVENT_KEYS`, then the propensity), for readers of
    whole logs: msgspec checks each value's type in C (integers are never floats or booleans, experiment names and
    arms are strings), a few times faster than parsing to dicts and checking them in Python. The rules across keys
    (a "next" line's recommendation, where a propensity may be) are the reader's to check; `event_problem` holds them
    all. JSON has no NaN, so a NaN propensity means the line has none."""

    message: Literal["next", "last"]
    timestamp: int
    user: int
    track: int
    time: float
    latency: float
    recommendation: int | None
    experiments: dict[str, str]
    propensity: float = math.nan


def typed_events(path: Path | str) -> list[TypedEvent] | None:
    """Every non-blank line of one log file as a `TypedEvent` (a `.gz` file read as gzip), or None as soon as a line
    is not one (not JSON, a missing or unknown key, a value of the wrong type): `event_problem` then says why."""
    path = Path(path)
    decoder = msgspec.json.Decoder(TypedEvent)
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
        try:
            return [decoder.decode(line) for line in handle if not line.isspace()]
        except msgspec.DecodeError:
            return None


def event_problem(row: object) -> str | None:
    """Why a parsed log line is not an event, or None when it is one.

    `latency` may be negative: the course's own logs hold a few (the service subtracted two wall-clock readings
    across a clock adjustment); readers decide what to do with them.
    """
    if type(row) is not dict:
        return "not a JSON object"
    if _written_by_the_service(row):
        return None
    message = row.get("message")
    optional = {PROPENSITY_KEY} if message == "next" else set()
    if not _EVENT_KEY_SET <= row.keys() or not row.keys() - _EVENT_KEY_SET <= optional:
        missing = sorted(_EVENT_KEY_SET - row.keys())
        extra = sorted(row.keys() - _EVENT_KEY_SET - optional)
        return f"keys differ from the schema (missing {missing}, unexpected {extra})"
    if message not in MESSAGES:
        return f"message must be 'next' or 'last', got {message!r}"
    if PROPENSITY_KEY in row:
        propensity = row[PROPENSITY_KEY]
        if not is_finite_number(propensity) or not 0.0 < propensity <= 1.0:
            return f"propensity must be a number in (0, 1], got {propensity!r}"
    for key in ("timestamp", "user", "track"):
        if not is_int(row[key]):
            return f"{key} must be an integer, got {row[key]!r}"
    if not is_finite_number(row["time"]):
        return f"time must be a finite number, got {row['time']!r}"
    if not is_finite_number(row["latency"]):
        return f"latency must be a finite number, got {row['latency']!r}"
    recommendation = row["recommendation"]
    if message == "next" and not is_int(recommendation):
        return f"a 'next' row needs an integer recommendation, got {recommendation!r}"
    if message == "last" and recommendation is not None:
        return f"a 'last' row has recommendation null, got {recommendation!r}"
    experiments = row["experiments"]
    if type(experiments) is not dict or not all(
        type(name) is str and type(arm) is str for name, arm in experiments.items()
    ):
        return f"experiments must map experiment names to arm names, got {experiments!r}"
    return None


def event(
    message: str,
    timestamp: int,
    user: int,
    track: int,
    time: float,
    latency: float,
    recommendation: int | None,
    experiments: dict[str, str],
    propensity: float | None = None,
) -> dict:
    """One event as the log holds it, keys in the schema's order; `propensity` (a "next" line's) last when given."""
    row = {
        "message": message,
        "timestamp": timestamp,
        "user": user,
        "track": track,
        "time": time,
        "latency": latency,
        "recommendation": recommendation,
        "experiments": experiments,
    }
    if propensity is not None:
        row[PROPENSITY_KEY] = propensity
    return row


# ---------------------------------------------------------------------------------------------------------------
# A/B assignment


def arm_name(position: int) -> str:
    """The default name of an experiment's arm at this position: C, then T1, T2, ..."""
    return CONTROL_ARM if position == 0 else f"T{position}"


def experiment_seed(experiment_name: str) -> int:
    """The course hashed the name with signed mmh3 3.0; as a seed that is the same 32 bits read unsigned."""
    return mmh3.hash(experiment_name, signed=False)


def assign_arm(experiment_name: str, arm_count: int, user: int, *, seed: int | None = None) -> int:
    """Index of the user's arm: murmur3(str(user), seed=unsigned murmur3(name)) mod k, both unsigned.

    Pass `seed=experiment_seed(name)` to skip hashing the name on every call.
    """
    if seed is None:
        seed = experiment_seed(experiment_name)
    return mmh3.hash(str(user), seed=seed, signed=False) % arm_count
