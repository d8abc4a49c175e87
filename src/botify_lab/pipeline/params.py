"""Reading params.yaml: configuration flows from it, never from edited code."""
from __future__ import annotations

from pathlib import Path

import yaml


def load_params(path: Path | str = "params.yaml") -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)
