"""The track catalog and the data files recommenders read, parsed once at startup with orjson."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson


class DataFileError(ValueError):
    """A catalog or recommender file the service cannot trust; names the file and line."""


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line of a JSON Lines file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataFileError(f"cannot read {path}: {error}") from error
    for number, line in enumerate(data.splitlines(), start=1):
        if line.strip():
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError as error:
                raise DataFileError(f"{path}:{number}: not JSON ({error})") from error


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
        for value in values:
            if type(value) is not int or not 0 <= value < size:
                raise DataFileError(f"{where}: {value!r} is not a track id of the catalog (0..{size - 1})")
        return tuple(values)


def load_catalog(path: Path) -> Catalog:
    rows: list[dict | None] = []
    artist_index: dict[str, int] = {}
    artist_of_track: list[int] = []
    for number, row in iter_json_lines(path):
        if not isinstance(row, dict) or type(row.get("track")) is not int or not isinstance(row.get("artist"), str):
            raise DataFileError(f"{path}:{number}: expected {{\"artist\": str, \"title\": str, \"track\": int}}")
        track = row["track"]
        if track < 0:
            raise DataFileError(f"{path}:{number}: negative track id {track}")
        if track >= len(rows):
            missing = track + 1 - len(rows)
            rows.extend([None] * missing)
            artist_of_track.extend([-1] * missing)
        if rows[track] is not None:
            raise DataFileError(f"{path}:{number}: duplicate track id {track}")
        rows[track] = row
        artist_of_track[track] = artist_index.setdefault(row["artist"], len(artist_index))
    if not rows:
        raise DataFileError(f"{path}: empty catalog")
    if None in rows:
        raise DataFileError(f"{path}: track ids must be 0..{len(rows) - 1}; id {rows.index(None)} is missing")
    tracks_by_artist: list[list[int]] = [[] for _ in artist_index]
    for track, artist in enumerate(artist_of_track):
        tracks_by_artist[artist].append(track)
    return Catalog(tuple(rows), tuple(artist_of_track), tuple(tuple(tracks) for tracks in tracks_by_artist))
