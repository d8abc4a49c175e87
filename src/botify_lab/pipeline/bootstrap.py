"""The project's own entry points for `make repro` and `make world`: the world first, then DVC."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from botify_lab.pipeline.params import PARAMS_FILE, ParamsError, load_params
from botify_lab.pipeline.world import (
    DATA_DIR_NAME,
    REPO_ROOT,
    WorldMismatch,
    ensure_world,
    generate_world_dir,
    record_world_inputs,
    recorded_world_md5,
)


class BootstrapError(RuntimeError):
    """A problem the user must fix by hand; printed without a traceback."""


# DVC's closing hints (stage dvc.lock with git, turn on auto-staging, push to a remote): this project commits
# dvc.lock by hand and has no remote by default, so they are noise on every run.
DVC_HINTS = (
    b"To track the changes with git, run:",
    b"git add ",
    b"To enable auto staging, run:",
    b"dvc config core.autostage true",
    b"Use `dvc push` to send your updates to remote storage.",
)


def pass_through_without_hints(source: int, out) -> None:
    """Copy DVC's output from a file descriptor to `out`, less its hints and the blank lines that framed them.

    Progress bars (redrawn with a carriage return) pass at once; a blank line is held back only until the next line
    shows whether it framed a hint.
    """
    pending: list[bytes] = []
    partial = b""
    while chunk := os.read(source, 65536):
        partial += chunk
        *lines, partial = partial.split(b"\n")
        for line in lines:
            if line.strip().startswith(DVC_HINTS):
                pending = []
            elif not line.strip():
                pending.append(line)
            else:
                out.write(b"".join(blank + b"\n" for blank in pending) + line + b"\n")
                pending = []
        if b"\r" in partial:
            out.write(partial)
            partial = b""
        out.flush()
    out.write(partial)
    out.flush()


def dvc(*arguments: str, root: Path = REPO_ROOT) -> None:
    """Run DVC from this venv with analytics off, its output without the hints; its exit code becomes ours."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "SHELL": "/bin/bash"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", *arguments], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    pass_through_without_hints(process.stdout.fileno(), sys.stdout.buffer)
    if process.wait() != 0:
        raise BootstrapError(f"`dvc {' '.join(arguments)}` failed with exit code {process.returncode}")


def command_world(root: Path = REPO_ROOT) -> None:
    generate_world_dir(root)
    dvc("add", "--quiet", DATA_DIR_NAME, root=root)
    record_world_inputs(root)
    print(
        f"[bootstrap] world written to data/ and recorded in data.dvc ({recorded_world_md5(root)}); "
        "commit data.dvc to make it the project's world",
        flush=True,
    )


def command_repro(extra: list[str], root: Path = REPO_ROOT) -> None:
    load_params(root / PARAMS_FILE)  # a typo fails here, in one line per problem, before any work
    ensure_world(root)
    dvc("repro", *extra, root=root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m botify_lab.pipeline.bootstrap",
        description="Regenerate the simulator world when missing (verified against data.dvc) and run the pipeline.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    repro = sub.add_parser("repro", help="ensure data/ matches data.dvc, then `dvc repro` (extra args pass through)")
    repro.add_argument("dvc_args", nargs=argparse.REMAINDER, help="arguments passed on to `dvc repro`")
    sub.add_parser("world", help="regenerate data/ from params.yaml's world: section and update data.dvc on purpose")
    sub.add_parser("check-world", help="only make sure data/ exists and matches data.dvc")
    args = parser.parse_args(argv)
    try:
        if args.command == "repro":
            command_repro(args.dvc_args)
        elif args.command == "world":
            command_world()
        else:
            ensure_world()
    except (BootstrapError, WorldMismatch, ParamsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
