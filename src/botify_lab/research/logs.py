"""The service's event log as tables: rows, sessions, training pairs and track popularity, as the course built them.

Everything is vectorised (numpy/pandas) after one msgspec pass that decodes and type-checks the lines in C, so a log
of 400,000 events loads in under 2 seconds (3 with orjson and a check in Python per line, which remains the fallback
that names a bad line).
"""

from __future__ import annotations

import math
import warnings
from operator import attrgetter
from pathlib import Path

import numpy as np
import pandas as pd

from botify_lab.formats import (
    EVENT_KEYS,
    LOG_FILE_NAME,
    PROPENSITY_KEY,
    TypedEvent,
    event_problem,
    iter_json_lines,
    log_files,
    typed_events,
)

SESSION_FIELDS = ("user", "session", "start", "tracks", "time", "latency", "closed")


class LogFormatError(ValueError):
    """A log line that does not follow the event-log schema; the message names the file and line."""


def event_log_files(log_dir: Path | str) -> list[Path]:
    """The log's files in writing order: a folder's rotated files, or one file given directly (gzipped or not)."""
    log_dir = Path(log_dir)
    if log_dir.is_file():
        return [log_dir]
    if not log_dir.is_dir():
        raise FileNotFoundError(f"event-log folder not found: {log_dir}")
    files = log_files(log_dir)
    if not files:
        raise FileNotFoundError(f"no {LOG_FILE_NAME} or {LOG_FILE_NAME}.N files in {log_dir}")
    return files


def read_log(log_dir: Path | str) -> pd.DataFrame:
    """All events of a log folder (or of one log file) in the log's own order, with an `order` column (0, 1, ...).

    Columns: order, message, timestamp (ms), user, track, time, latency (s), recommendation (nullable Int64),
    experiments (dict per row), propensity (NaN where the line has none: "last" lines, older logs). Blank lines are
    skipped; any other malformed line raises LogFormatError naming file:line, so nothing is silently dropped.
    Gzipped files (`data.json.gz`, `x.jsonl.gz`) are read as they are.
    Negative latencies (the course's own logs hold a few, from clock adjustments) are kept, with a warning.
    """
    files = event_log_files(log_dir)
    events = _typed_events_frame(files)
    if events is None:  # a line the typed decoding refused: check each line in full, naming the first bad one
        events = _checked_events_frame(files)
    negative = int((events["latency"] < 0).sum())
    if negative:
        warnings.warn(
            f"{log_dir}: {negative} events with a negative latency (a clock adjustment while serving); kept as logged",
            stacklevel=2,
        )
    return events


def read_logs(log_dirs: list[Path | str]) -> pd.DataFrame:
    """Several log folders as one log (`read_log` of each, in the given order, `order` counting on across them): the
    days of one service, or the rounds of the loop of days, whose clock continues from one to the next."""
    if not log_dirs:
        raise ValueError("read_logs needs at least one log folder")
    events = pd.concat([read_log(log_dir) for log_dir in log_dirs], ignore_index=True)
    events["order"] = np.arange(len(events), dtype=np.int64)
    return events


def _typed_events_frame(files: list[Path]) -> pd.DataFrame | None:
    """The log decoded line by line into typed events (C speed), then the rules across keys checked column-wise;
    None when any line or rule fails, so that the full check can name the line."""
    typed: list[TypedEvent] = []
    for path in files:
        decoded = typed_events(path)
        if decoded is None:
            return None
        typed.extend(decoded)
    columns = {key: list(map(attrgetter(key), typed)) for key in (*EVENT_KEYS, PROPENSITY_KEY)}
    events = _events_frame(columns)
    is_next = (events["message"] == "next").to_numpy()
    logged_propensity = events["propensity"].notna().to_numpy()
    propensity = events["propensity"].to_numpy()[logged_propensity]
    follows_the_rules = (
        np.array_equal(is_next, events["recommendation"].notna().to_numpy())
        and is_next[logged_propensity].all()
        and ((propensity > 0.0) & (propensity <= 1.0)).all()
        and np.isfinite(events[["time", "latency"]].to_numpy()).all()
    )
    return events if follows_the_rules else None


def _checked_events_frame(files: list[Path]) -> pd.DataFrame:
    """The log parsed to dicts and checked line by line (`event_problem`): the first bad line raises, naming it."""
    rows: list[dict] = []
    for path in files:
        for line_number, row in iter_json_lines(path, LogFormatError):
            problem = event_problem(row)
            if problem is not None:
                raise LogFormatError(f"{path}:{line_number}: {problem}")
            rows.append(row)
    columns = {key: [row[key] for row in rows] for key in EVENT_KEYS}
    columns[PROPENSITY_KEY] = [row.get(PROPENSITY_KEY, math.nan) for row in rows]
    return _events_frame(columns)


def _events_frame(columns: dict[str, list]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order": np.arange(len(columns["message"]), dtype=np.int64),
            "message": pd.Series(columns["message"], dtype=object),
            **{key: np.array(columns[key], dtype=np.int64) for key in ("timestamp", "user", "track")},
            **{key: np.array(columns[key], dtype=np.float64) for key in ("time", "latency")},
            "recommendation": pd.array(columns["recommendation"], dtype="Int64"),
            "experiments": pd.Series(columns["experiments"], dtype=object),
            "propensity": np.array(columns[PROPENSITY_KEY], dtype=np.float64),
        }
    )


def experiment_names(events: pd.DataFrame) -> list[str]:
    """Every experiment named in the log, in order of first appearance."""
    names: dict[str, None] = {}
    for experiments in _distinct_experiments(events):
        names.update(dict.fromkeys(experiments))
    return list(names)


def _distinct_experiments(events: pd.DataFrame) -> list[dict]:
    """Distinct experiment dicts in first-appearance order (a log holds very few distinct ones)."""
    seen: dict[tuple, dict] = {}
    for experiments in events["experiments"]:
        seen.setdefault(tuple(experiments.items()), experiments)
    return list(seen.values())


def arms(events: pd.DataFrame, experiment: str) -> pd.Series:
    """Each row's arm in `experiment` (None where the row was logged without that experiment)."""
    return pd.Series([row.get(experiment) for row in events["experiments"]], index=events.index, dtype=object)


def _time_ordered(events: pd.DataFrame) -> np.ndarray:
    """Row positions per user in time order; equal timestamps keep the log's order (never split a session)."""
    return np.lexsort((events["order"].to_numpy(), events["timestamp"].to_numpy(), events["user"].to_numpy()))


def _session_starts(users: np.ndarray, is_last: np.ndarray) -> np.ndarray:
    """Boolean mask of rows (already time-ordered per user) that open a session."""
    starts = np.ones(len(users), dtype=bool)
    if len(users) > 1:
        starts[1:] = (users[1:] != users[:-1]) | is_last[:-1]
    return starts


def open_sessions(events: pd.DataFrame) -> int:
    """Users whose last event (in time order) is not a "last": the sessions a log leaves open."""
    order = _time_ordered(events)
    users = events["user"].to_numpy()[order]
    ends = np.ones(len(users), dtype=bool)
    ends[:-1] = users[1:] != users[:-1]
    return int((ends & (events["message"].to_numpy()[order] != "last")).sum())


def sessionize(events: pd.DataFrame, *, include_unclosed: bool = False) -> pd.DataFrame:
    """The course's sessions: per user in time order, rows accumulate until a "last" row closes the session.

    One row per session: user, one arm column per experiment in the log (named after the experiment, taken
    from the session's first row), session (0-based index within the user), start (first timestamp, ms),
    tracks (row count), time (sum of listen time), latency (sum, ms), closed. A user's trailing session with no
    "last" row yet is dropped by default, like the course notebook (it counts only on "last"); pass
    include_unclosed=True to keep it (closed=False). `attrs["unclosed_sessions"]` counts them either way.
    """
    experiments = experiment_names(events)
    clash = sorted(set(experiments) & set(SESSION_FIELDS))
    if clash:
        raise ValueError(f"experiment names {clash} clash with session columns {SESSION_FIELDS}")
    order = _time_ordered(events)
    users = events["user"].to_numpy()[order]
    is_last = events["message"].to_numpy()[order] == "last"
    starts = _session_starts(users, is_last)
    start_rows = np.flatnonzero(starts)
    end_rows = np.append(start_rows[1:], len(order)) - 1
    session_user = users[start_rows]
    user_first_session = np.ones(len(start_rows), dtype=bool)
    user_first_session[1:] = session_user[1:] != session_user[:-1]
    session_number = np.arange(len(start_rows)) - np.maximum.accumulate(
        np.where(user_first_session, np.arange(len(start_rows)), 0)
    )
    if len(order):
        time_sum = np.add.reduceat(events["time"].to_numpy()[order], start_rows)
        latency_sum = np.add.reduceat(events["latency"].to_numpy()[order] * 1000.0, start_rows)
    else:
        time_sum = latency_sum = np.zeros(0)
    closed = is_last[end_rows] if len(order) else np.zeros(0, dtype=bool)
    first_rows = events.iloc[order[start_rows]]
    sessions = pd.DataFrame({"user": session_user})
    for name in experiments:
        sessions[name] = arms(first_rows, name).to_numpy()
    sessions["session"] = session_number.astype(np.int64)
    sessions["start"] = events["timestamp"].to_numpy()[order][start_rows]
    sessions["tracks"] = (end_rows - start_rows + 1).astype(np.int64)
    sessions["time"] = time_sum
    sessions["latency"] = latency_sum
    sessions["closed"] = closed
    unclosed = int((~closed).sum())
    if not include_unclosed:
        sessions = sessions[closed].reset_index(drop=True)
    sessions.attrs["unclosed_sessions"] = unclosed
    return sessions


def training_pairs(events: pd.DataFrame) -> pd.DataFrame:
    """The contextual model's examples: per session, (session's first track, this track, this track's listen time) for
    every row after the first.

    A row's `track` is the track just listened to with its `time`; a session's first row carries the first track
    (time 1.0), so it is the context and not an example. Columns: user, context, track, time, sorted per user in
    time order. A trailing unclosed session still contributes its listens (they happened).
    """
    order = _time_ordered(events)
    users = events["user"].to_numpy()[order]
    is_last = events["message"].to_numpy()[order] == "last"
    starts = _session_starts(users, is_last)
    tracks = events["track"].to_numpy()[order]
    session_index = np.cumsum(starts) - 1
    context = tracks[np.flatnonzero(starts)][session_index] if len(order) else tracks
    examples = ~starts
    return pd.DataFrame(
        {
            "user": users[examples],
            "context": context[examples].astype(np.int64),
            "track": tracks[examples].astype(np.int64),
            "time": events["time"].to_numpy()[order][examples],
        }
    )


def track_popularity(events: pd.DataFrame) -> pd.Series:
    """TopPop's popularity: total listen time per logged track (every row's track with its time), indexed by track.

    A float sum depends on the order of its terms, and a log written by several processes interleaves rows
    differently on every run; listen times have two decimals, so the sums are rounded to 6 decimals, which makes
    them (and the ranking's ties) the same whatever the order.
    """
    popularity = events.groupby("track", sort=True)["time"].sum().round(6)
    popularity.name = "popularity"
    return popularity


def top_tracks(events: pd.DataFrame, n: int | None = None) -> list[int]:
    """Track ids most popular first; equal popularity goes to the smaller id, so the list is deterministic."""
    popularity = track_popularity(events)
    ranking = np.lexsort((popularity.index.to_numpy(), -popularity.to_numpy()))
    ids = popularity.index.to_numpy()[ranking]
    if n is not None:
        ids = ids[:n]
    return [int(track) for track in ids]
