"""A synthetic event log, written fast (numpy, no service): for the engine-equality tests and the benchmark.

It has the shape of the pipeline's logs and the traps of real ones: sessions of many users interleaved, a "last"
row closing each session except a few, an A/B experiment (hash-assigned arms, a treatment effect), a second
experiment on some users and none on a holdout, coarse timestamps so that many rows share one (within a session,
across users and across rotated files), listen times that repeat exactly (0, 0.25, 0.5, 1), a few negative
latencies, rotated files in RotatingFileHandler naming, optionally gzipped, and optionally a blank line.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from botify_lab.formats import LOG_FILE_NAME, arm_name, assign_arm, experiment_seed, rotated_log_name

EXPERIMENT = "EXP"
OTHER_EXPERIMENT = "OTHER"


def synthetic_events(
    count: int,
    *,
    seed: int = 0,
    users: int | None = None,
    arms: int = 3,
    tracks: int = 50_000,
    experiment: str = EXPERIMENT,
    tick_ms: int = 5,
) -> dict[str, np.ndarray]:
    """Columns of `count` events in log order (message as bool `is_last`, recommendation -1 when null)."""
    rng = np.random.default_rng(seed)
    users = users or max(4, count // 40)
    sessions = count // 4 + 2
    lengths = 1 + rng.geometric(1 / 7, size=sessions)
    ends = np.cumsum(lengths)
    sessions = int(np.searchsorted(ends, count)) + 1
    lengths = lengths[:sessions]
    lengths[-1] -= int(ends[sessions - 1] - count)
    session_user = rng.integers(0, users, size=sessions) + 1_000
    user_ids = np.unique(session_user)
    seed_hash = experiment_seed(experiment)
    user_arm = np.fromiter(
        (assign_arm(experiment, arms, int(user), seed=seed_hash) for user in user_ids),
        dtype=np.int64,
        count=len(user_ids),
    )
    session_arm = user_arm[np.searchsorted(user_ids, session_user)]

    session_of = np.repeat(np.arange(sessions), lengths)
    first = np.zeros(sessions + 1, dtype=np.int64)
    first[1:] = np.cumsum(lengths)
    step = np.arange(count) - first[session_of]
    is_last = step == lengths[session_of] - 1
    unclosed = rng.random(sessions) < 0.02
    is_last &= ~unclosed[session_of]

    start = np.sort(rng.integers(0, count * tick_ms // 8 + 1, size=sessions)) // tick_ms * tick_ms
    gaps = rng.integers(0, 3, size=count) * tick_ms  # 0: the same timestamp as the row before
    gaps[first[:-1]] = 0
    offsets = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first[:-1]], lengths)
    timestamp = 1_700_000_000_000 + start[session_of] + offsets
    order = np.lexsort((step, rng.random(sessions)[session_of], timestamp))  # interleave, keep a session's order

    recommendation = rng.integers(0, tracks, size=count)
    track = np.empty(count, dtype=np.int64)
    track[1:] = recommendation[:-1]
    track[first[:-1]] = rng.integers(0, tracks, size=sessions)
    arm = session_arm[session_of]
    listened = rng.random(count) ** (1.0 + 0.15 * arm)
    repeated = np.array([0.0, 0.25, 0.5, 1.0])[rng.integers(0, 4, size=count)]
    time = np.where(rng.random(count) < 0.3, repeated, listened)
    time[first[:-1]] = 1.0
    latency = rng.exponential(0.002, size=count)
    latency[rng.random(count) < 1e-3] *= -0.1
    recommendation[is_last] = -1
    columns = {
        "is_last": is_last,
        "timestamp": timestamp,
        "user": session_user[session_of],
        "track": track,
        "time": time,
        "latency": latency,
        "recommendation": recommendation,
        "arm": arm,
    }
    return {name: values[order] for name, values in columns.items()}


def _experiments_json(user_ids: np.ndarray, arm: np.ndarray, experiment: str) -> list[str]:
    """Per row, its experiments object: most users in `experiment` only, some also in a second one (listed
    first or second), a holdout in none."""
    group = (user_ids * 2654435761 % 1000).tolist()
    texts = []
    for row_group, row_arm in zip(group, arm.tolist()):
        mine = f'"{experiment}":"{arm_name(row_arm)}"'
        if row_group < 10:
            texts.append("{}")
        elif row_group < 40:
            texts.append(f'{{{mine},"{OTHER_EXPERIMENT}":"{arm_name(row_group % 2)}"}}')
        elif row_group < 50:
            texts.append(f'{{"{OTHER_EXPERIMENT}":"T1",{mine}}}')
        else:
            texts.append(f"{{{mine}}}")
    return texts


def event_lines(columns: dict[str, np.ndarray], experiment: str = EXPERIMENT) -> list[str]:
    """JSON lines (with their newline) of `synthetic_events` columns, keys in the log's order."""
    experiments = _experiments_json(columns["user"], columns["arm"], experiment)
    recommendation = ["null" if value < 0 else str(value) for value in columns["recommendation"].tolist()]
    return [
        f'{{"message":"{"last" if last else "next"}","timestamp":{stamp},"user":{user},"track":{track},'
        f'"time":{time!r},"latency":{latency!r},"recommendation":{rec},"experiments":{exp}}}\n'
        for last, stamp, user, track, time, latency, rec, exp in zip(
            columns["is_last"].tolist(),
            columns["timestamp"].tolist(),
            columns["user"].tolist(),
            columns["track"].tolist(),
            columns["time"].tolist(),
            columns["latency"].tolist(),
            recommendation,
            experiments,
        )
    ]


def write_synthetic_log(
    folder,
    count: int,
    *,
    seed: int = 0,
    files: int = 4,
    gzip_files: int = 0,
    blank_line: bool = False,
    chunk: int = 1_000_000,
    **options,
) -> list[Path]:
    """Write `count` synthetic events into `folder` as `files` rotated files (data.json.{files-1} oldest ...
    data.json); the `gzip_files` oldest are gzipped (data.json.K.gz). Returns the files in writing order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    columns = synthetic_events(count, seed=seed, **options)
    experiment = options.get("experiment", EXPERIMENT)
    bounds = np.linspace(0, count, files + 1).astype(np.int64)
    written = []
    for position in range(files):
        index = files - 1 - position
        name = rotated_log_name(index) if index else LOG_FILE_NAME
        gzipped = position < gzip_files
        path = folder / (name + ".gz" if gzipped else name)
        with gzip.open(path, "wt", compresslevel=1) if gzipped else open(path, "w") as handle:
            for low in range(int(bounds[position]), int(bounds[position + 1]), chunk):
                high = min(low + chunk, int(bounds[position + 1]))
                part = {name: values[low:high] for name, values in columns.items()}
                lines = event_lines(part, experiment)
                if blank_line and position == files - 1 and low == bounds[position] and lines:
                    lines.insert(len(lines) // 2, "\n")
                handle.writelines(lines)
        written.append(path)
    return written
