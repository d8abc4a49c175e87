"""The project's own entry points for `make repro` and `make world`.

A fresh clone has no DVC remote, so `data/` (the simulator's world, versioned by `data.dvc`) cannot be pulled. The
world generator is deterministic, so we regenerate it from `params.yaml` and insist that the result hashes to what
`data.dvc` records: a mismatch fails loudly instead of letting DVC silently re-commit a different world.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from botify_lab.pipeline.outputs import atomic_output_dir
from botify_lab.pipeline.params import load_params

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR_NAME = "data"
WORLD_FILES = ("tracks.json", "users.json", "tracks.npy", "world.json")


class BootstrapError(RuntimeError):
    """A problem the user must fix by hand; printed without a traceback."""


def dvc_dir_md5(directory: Path) -> str:
    """The `md5: <hash>.dir` DVC 3 records for a directory: md5 of the sorted JSON list of (relpath, md5) entries."""
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = hashlib.md5()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        entries.append({"md5": digest.hexdigest(), "relpath": path.relative_to(directory).as_posix()})
    entries.sort(key=lambda entry: entry["relpath"].split("/"))
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def recorded_world_md5(root: Path = REPO_ROOT) -> str | None:
    dvc_file = root / "data.dvc"
    if not dvc_file.exists():
        return None
    with open(dvc_file, encoding="utf-8") as handle:
        outs = yaml.safe_load(handle)["outs"]
    return next(out["md5"] for out in outs if out["path"] == DATA_DIR_NAME)


def world_arguments(params: dict) -> dict:
    """`params.yaml`'s `world:` section as keyword arguments of `sim.world.generate_world`."""
    world = dict(params["world"])
    arguments = {
        "seed": world.pop("seed"),
        "n_tracks": world.pop("tracks"),
        "n_users": world.pop("users"),
        "dim": world.pop("dim"),
    }
    arguments.update(world)
    return arguments


def generate_world_dir(root: Path = REPO_ROOT) -> Path:
    """Generate the world of `params.yaml` into a scratch folder that replaces `data/` only on success."""
    from sim.world import generate_world

    target = root / DATA_DIR_NAME
    with atomic_output_dir(target) as scratch:
        generate_world(scratch, **world_arguments(load_params(root / "params.yaml")))
    return target


def ensure_world(root: Path = REPO_ROOT) -> Path:
    """Make `data/` exist and match `data.dvc`, regenerating it when missing."""
    data_dir = root / DATA_DIR_NAME
    expected = recorded_world_md5(root)
    if expected is None:
        raise BootstrapError("data.dvc is missing: run `make world` to generate the world and record it")
    complete = all((data_dir / name).is_file() for name in WORLD_FILES)
    if complete and dvc_dir_md5(data_dir) == expected:
        return data_dir
    if complete:
        raise BootstrapError(
            f"{data_dir} does not match data.dvc (expected {expected}, found {dvc_dir_md5(data_dir)}). "
            "Delete data/ to regenerate it, or run `make world` to record a new world on purpose."
        )
    print(f"[bootstrap] {data_dir} missing: regenerating the world from params.yaml", flush=True)
    generate_world_dir(root)
    found = dvc_dir_md5(data_dir)
    if found != expected:
        raise BootstrapError(
            f"the regenerated world hashes to {found}, but data.dvc records {expected}. The generator or the "
            "world: parameters changed since data.dvc was written; run `make world` to record the new world "
            "on purpose (and commit data.dvc), or restore the generator."
        )
    print(f"[bootstrap] world regenerated and verified against data.dvc ({expected})", flush=True)
    return data_dir


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
    ensure_world(root)
    dvc("repro", *extra, root=root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m botify_lab.bootstrap",
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
    except BootstrapError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
