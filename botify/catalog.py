"""The track catalog and the data files recommenders read, parsed once at startup.

The catalog file's format and its reader are the project's shared ones (`botify_lab.formats`); a bad file raises
`DataFileError` (a `FormatError`) naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botify_lab.formats import FormatError, iter_json_lines, read_catalog_rows

__all__ = ["Catalog", "DataFileError", "iter_data_lines", "load_catalog"]


class DataFileError(FormatError):
    """A catalog or recommender file the service cannot trust; names the file and line."""


def iter_data_lines(path: Path):
    """(line number, parsed value) of a JSON Lines data file; a bad line raises DataFileError."""
    return iter_json_lines(path, DataFileError)


@dataclass(frozen=True)
class Catalog:
    """Rows by id plus, for StickyArtist, every track's artist index and each artist's tracks."""

    rows: tuple[dict, ...]
    artist_of_track: tuple[int, ...]
    tracks_by_artist: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.rows)

    def track_ids(self, values: Any, where: str) -> tuple[int, ...]:
        """Validate a list of track ids from a data file, so the service never serves an id outside the catalog."""
        if not isinstance(values, list):
            raise DataFileError(f"{where}: expected a list of track ids, got {type(values).__name__}")
        size = len(self.rows)
        # The common case checked by C loops (a contextual file holds 5 million ids: a Python loop over them took
        # 0.6 s of every service start); a bad value is then named by the loop below.
        if not values or (set(map(type, values)) == {int} and min(values) >= 0 and max(values) < size):
            return tuple(values)
        for value in values:
            if type(value) is not int or not 0 <= value < size:
                raise DataFileError(f"{where}: {value!r} is not a track id of the catalog (0..{size - 1})")
        return tuple(values)


def load_catalog(path: Path) -> Catalog:
    rows = read_catalog_rows(path, DataFileError)
    artist_index: dict[str, int] = {}
    artist_of_track = [artist_index.setdefault(row["artist"], len(artist_index)) for row in rows]
    tracks_by_artist: list[list[int]] = [[] for _ in artist_index]
    for track, artist in enumerate(artist_of_track):
        tracks_by_artist[artist].append(track)
    return Catalog(tuple(rows), tuple(artist_of_track), tuple(tuple(tracks) for tracks in tracks_by_artist))
