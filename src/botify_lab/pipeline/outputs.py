"""Writing stage outputs: whole or not at all, so a failed or interrupted stage leaves nothing half-written."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson

from botify_lab.formats import atomic_write_bytes
from botify_lab.pipeline import layout


def show_progress() -> bool:
    """Progress bars only for a person at a terminal: never inside notebooks (they would fill the reports) or logs."""
    return sys.stderr.isatty() and not os.environ.get("TQDM_DISABLE")


@contextlib.contextmanager
def atomic_output_dir(target: Path) -> Iterator[Path]:
    """Yield a scratch folder beside `target`; it replaces `target` only when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield scratch
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)


def write_json(path: Path | str, document: dict, *, sort_keys: bool = False) -> Path:
    """Indented JSON with a final newline, atomically; floats as the caller rounded them, so reruns compare."""
    option = orjson.OPT_INDENT_2 | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    return atomic_write_bytes(path, orjson.dumps(document, option=option) + b"\n")


def write_metrics(name: str, document: dict, *, sort_keys: bool = False) -> Path:
    """metrics/<name>.json: every metrics file of the pipeline goes through here."""
    return write_json(layout.metrics_file(name), document, sort_keys=sort_keys)


def read_metrics(name: str) -> dict | None:
    """metrics/<name>.json as a later stage reads it, or None before the stage that writes it has run."""
    path = layout.metrics_file(name)
    return orjson.loads(path.read_bytes()) if path.exists() else None


def write_plot(name: str, table) -> Path:
    """plots/<name>.csv: the data of a DVC plot (a pandas frame), floats as the caller rounded them."""
    return atomic_write_bytes(layout.plot_file(name), table.to_csv(index=False, lineterminator="\n").encode())


def save_figure(figure, name: str) -> Path:
    """reports/figures/<name>.png, without a timestamp or software tag, so a rerun writes the same bytes."""
    path = layout.figure_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90, metadata={"Software": None})
    return path
