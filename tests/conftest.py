"""Fixtures every test area shares: where the repo and the course's shared files are, and free loopback ports."""

import os
import socket
from pathlib import Path

import pytest
import yaml

from sim.generator import KNOBS

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("BOTIFY_LAB_SHARED", REPO_ROOT.parent / "shared"))
UPSTREAM_WORLD = SHARED_DIR / "upstream-world"
REAL_LOGS = SHARED_DIR / "real-logs"
REAL_LOG_FILES = sorted(REAL_LOGS.glob("*.jsonl.gz"))


def world_knobs(**overrides) -> dict:
    """The world generator's structure knobs of params.yaml (seed and sizes left out), with some replaced."""
    world = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["world"]
    return {**{name: world[name] for name in KNOBS}, **overrides}


def free_port() -> int:
    """A port the kernel just handed out on loopback; good enough for starting one server right after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def loopback_port() -> int:
    return free_port()


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
