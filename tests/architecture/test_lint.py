"""The tree stays clean under ruff (lint and format, configured in pyproject.toml), so style holds without review."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=REPO_ROOT, input=stdin, capture_output=True, text=True, timeout=120
    )


def test_the_tree_passes_ruff_check():
    result = ruff("check", "--no-cache", ".")
    assert result.returncode == 0, f"`make lint` shows the findings; `make format` fixes most:\n{result.stdout}"


def test_the_tree_is_ruff_formatted():
    result = ruff("format", "--no-cache", "--check", ".")
    assert result.returncode == 0, f"run `make format`:\n{result.stdout}"


def test_the_configured_rules_catch_what_they_should():
    """The project's config (not ruff's defaults) is the one applied: unsorted first-party imports, a long line and an
    unused import are all reported."""
    source = "import sim\nimport botify\nimport os\n\nX = '" + "x" * 130 + "'\nprint(sim, botify)\n"
    result = ruff("check", "--no-cache", "--stdin-filename", "src/botify_lab/probe.py", "-", stdin=source)
    assert result.returncode == 1
    for code in ("I001", "E501", "F401"):
        assert code in result.stdout, result.stdout
