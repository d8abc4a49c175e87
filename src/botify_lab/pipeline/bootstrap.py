"""The project's own entry points for `make repro` and `make world`: the world first, then DVC."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from botify_lab.pipeline.params import PARAMS_FILE, ParamsError, load_params
from botify_lab.pipeline.scheduler import DVC_HINTS, default_jobs, dvc_environment, run_stages
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
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", *arguments],
        cwd=root,
        env=dvc_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
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


def command_repro(extra: list[str], jobs: int, timings: Path | None = None, root: Path = REPO_ROOT) -> None:
    """The world, then every stage that needs it: `jobs` at a time through the scheduler, or, with arguments for
    `dvc repro` (targets, --force, ...) or one job, a plain `dvc repro`."""
    load_params(root / PARAMS_FILE)  # a typo fails here, in one line per problem, before any work
    started = time.monotonic()
    ensure_world(root)
    world_seconds = round(time.monotonic() - started, 1)
    if extra or jobs == 1:
        dvc("repro", *extra, root=root)
        return
    stages = run_stages(root, jobs, sys.stdout.buffer)
    if timings is not None:
        record = {"world_seconds": world_seconds, "jobs": jobs, **dataclasses.asdict(stages)}
        timings.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if stages.failed:
        raise BootstrapError(f"stage {', '.join(repr(name) for name in stages.failed)} failed: its output is above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m botify_lab.pipeline.bootstrap",
        description="Regenerate the simulator world when missing (verified against data.dvc) and run the pipeline.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    repro = sub.add_parser(
        "repro",
        help="ensure data/ matches data.dvc, then run the stages that need it, several at a time",
        description="Regenerate data/ when missing (verified against data.dvc), then run every stage that changed or "
        "reads from one that ran, JOBS at a time, each as `dvc repro --single-item` (DVC's own records, the same "
        "bytes as a plain `dvc repro`). Extra arguments run a plain `dvc repro` with them instead.",
    )
    repro.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        help=f"stages at a time (default: the cores, at most 4: here {default_jobs()}); 1 runs a plain `dvc repro`",
    )
    repro.add_argument("--timings", type=Path, help="write each stage's seconds (and the world's) to this JSON file")
    repro.add_argument(
        "dvc_args", nargs="*", help="targets and options passed on to a plain `dvc repro` (e.g. --force train@ours)"
    )
    sub.add_parser("world", help="regenerate data/ from params.yaml's world: section and update data.dvc on purpose")
    sub.add_parser("check-world", help="only make sure data/ exists and matches data.dvc")
    args, unknown = parser.parse_known_args(argv)  # options of `dvc repro` (--force, ...) are not ours
    if unknown and args.command != "repro":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if args.command == "repro":
            if args.jobs < 1:
                parser.error("--jobs must be at least 1")
            command_repro([*args.dvc_args, *unknown], args.jobs, args.timings)
        elif args.command == "world":
            command_world()
        else:
            ensure_world()
    except (BootstrapError, WorldMismatch, ParamsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the stages got the interrupt too; the scheduler waited for them to stop
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
