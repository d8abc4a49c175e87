"""The project's own entry points for `make repro` and `make world`: the world first, then DVC."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from botify_lab.pipeline.params import ParamsError, load_params
from botify_lab.pipeline.world import (
    DATA_DIR_NAME,
    REPO_ROOT,
    WorldMismatch,
    ensure_world,
    generate_world_dir,
    recorded_world_md5,
)


class BootstrapError(RuntimeError):
    """A problem the user must fix by hand; printed without a traceback."""


def dvc(*arguments: str, root: Path = REPO_ROOT) -> None:
    """Run DVC from this venv with analytics off; its exit code becomes ours."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "SHELL": "/bin/bash"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    completed = subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=root, env=env)
    if completed.returncode != 0:
        raise BootstrapError(f"`dvc {' '.join(arguments)}` failed with exit code {completed.returncode}")


def command_world(root: Path = REPO_ROOT) -> None:
    generate_world_dir(root)
    dvc("add", "--quiet", DATA_DIR_NAME, root=root)
    print(f"[bootstrap] world written to data/ and recorded in data.dvc ({recorded_world_md5(root)}); "
          "commit data.dvc to make it the project's world", flush=True)


def command_repro(extra: list[str], root: Path = REPO_ROOT) -> None:
    load_params(root / "params.yaml")  # a typo fails here, in one line per problem, before any work
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
