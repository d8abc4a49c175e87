"""Fixtures of the research-code tests: a tiny catalog."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    """A 6-track catalog with two artists (ids 0..5)."""
    rows = [{"artist": f"artist {track % 2}", "title": f"song {track}", "track": track} for track in range(6)]
    path = tmp_path / "tracks.json"
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path
