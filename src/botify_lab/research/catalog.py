"""The public catalog (`tracks.json`) as a table: all a model may know about tracks besides the event log."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from botify_lab.formats import read_catalog_rows


def read_catalog(path: Path | str) -> pd.DataFrame:
    """tracks.json as a frame (track, artist, title) in id order; ids must be exactly 0..N-1."""
    rows = read_catalog_rows(path)
    return pd.DataFrame(
        [(row["track"], row["artist"], row["title"]) for row in rows], columns=["track", "artist", "title"]
    )
