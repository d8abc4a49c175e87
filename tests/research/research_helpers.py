"""Builders of tiny hand-made event logs for the research-code tests."""

from __future__ import annotations

from pathlib import Path

import orjson


def event(
    message: str,
    timestamp: int,
    user: int,
    track: int,
    time: float,
    *,
    recommendation: int | None = 0,
    latency: float = 0.001,
    experiments: dict | None = None,
) -> dict:
    """One log row as botify writes it (recommendation is forced to null on "last", as the service logs it)."""
    return {
        "message": message,
        "timestamp": timestamp,
        "user": user,
        "track": track,
        "time": time,
        "latency": latency,
        "recommendation": None if message == "last" else recommendation,
        "experiments": {"EXP": "C"} if experiments is None else experiments,
    }


def write_log(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path
