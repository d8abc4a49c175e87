"""The public catalog (tracks.json) and atomic file writes shared by the exporters."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import orjson
import pandas as pd

CATALOG_KEYS = frozenset({"artist", "title", "track"})


def jsonl_rows(path: Path, error: type[Exception] = ValueError):
    """(line number, parsed object) for each non-blank line; a line that is not JSON raises `error` naming file:line."""
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, orjson.loads(line)
            except orjson.JSONDecodeError as problem:
                raise error(f"{path}:{line_number}: not valid JSON ({problem})") from None


def read_catalog(path: Path | str) -> pd.DataFrame:
    """tracks.json as a frame (track, artist, title) in id order; ids must be exactly 0..N-1."""
    path = Path(path)
    rows = []
    for line_number, row in jsonl_rows(path):
        if type(row) is not dict or not CATALOG_KEYS <= row.keys() or type(row["track"]) is not int:
            raise ValueError(f"{path}:{line_number}: a catalog row needs artist, title and an integer track")
        rows.append((row["track"], row["artist"], row["title"]))
    catalog = pd.DataFrame(rows, columns=["track", "artist", "title"]).sort_values("track", ignore_index=True)
    if not catalog["track"].equals(pd.Series(range(len(catalog)), dtype=catalog["track"].dtype)):
        raise ValueError(f"{path}: track ids must be exactly 0..{len(catalog) - 1}, each once")
    return catalog


def atomic_write_bytes(path: Path | str, payload: bytes) -> Path:
    """Write via a temporary file in the same folder and rename, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(payload)
    os.replace(handle.name, path)
    return path
