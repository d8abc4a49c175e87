"""Fixtures every test area shares: where the repo and the course's shared files are, and free loopback ports."""

import os
from pathlib import Path

import pytest
import yaml

from botify.launch import free_loopback_port
from sim.settings import KNOBS

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("BOTIFY_LAB_SHARED", REPO_ROOT.parent / "shared"))
UPSTREAM_WORLD = SHARED_DIR / "upstream-world"
REAL_LOGS = SHARED_DIR / "real-logs"
REAL_LOG_FILES = sorted(REAL_LOGS.glob("*.jsonl.gz"))


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` written over it, nested mappings merged key by key (in place; returns `base`)."""
    for key, value in changes.items():
        base[key] = merged(base.get(key) or {}, value) if isinstance(value, dict) else value
    return base


def repo_params(changes: dict | None = None, *, models: tuple[str, ...] | None = None):
    """The repository's params.yaml with a test's own sizes and seeds merged over it (only `models` kept, when
    given), checked by the schema as every stage reads it."""
    from botify_lab.pipeline.params import check_params

    raw = merged(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), changes or {})
    if models is not None:
        raw["models"] = {name: raw["models"][name] for name in models}
    return check_params(raw)


def world_knobs(**overrides) -> dict:
    """The world generator's structure knobs of params.yaml (seed and sizes left out), with some replaced."""
    world = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["world"]
    return {**{name: world[name] for name in KNOBS}, **overrides}


@pytest.fixture
def loopback_port() -> int:
    return free_loopback_port()


@pytest.fixture(scope="session")
def upstream_world() -> Path:
    """The course's own catalog and users; tests using it skip cleanly when ../shared is absent."""
    if not (UPSTREAM_WORLD / "tracks.json").is_file():
        pytest.skip(f"course files not found under {UPSTREAM_WORLD}")
    return UPSTREAM_WORLD


@pytest.fixture(scope="session")
def real_logs_present() -> list[Path]:
    """The course's raw event logs; skipped without ../shared, but CI must have them."""
    if not REAL_LOG_FILES:
        if os.environ.get("CI"):
            pytest.fail(f"the course's logs are missing from {REAL_LOGS}")
        pytest.skip(f"the course's logs are not beside the repo ({REAL_LOGS})")
    return REAL_LOG_FILES
