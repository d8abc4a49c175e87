"""The simulator's world in the pipeline: built from params.yaml's `world:` section and checked against data.dvc.

A fresh clone has no DVC remote, so `data/` (versioned by `data.dvc`) cannot be pulled. The world generator is
deterministic, so the world is regenerated from `params.yaml` and must hash to what `data.dvc` records: a mismatch
fails loudly instead of letting DVC silently re-commit a different world.

`world.source` picks the world: `listening` (the default: hidden embeddings factorized by LightFM WARP from a
synthetic listening history, as the course made its own; knobs in `world.listening`), `generated` (a catalog tree of
genres, styles and artists, built in seconds), or `course`, the course's own `tracks.json` and `users.json` from
`world.course_dir` (a path relative to the repository root, or absolute) with hidden embeddings from the tree's
fitted knobs.

`make world` also records in data.dvc's `meta` what the world was built from (the `world:` section, the code that
built it, the pinned packages), so a test can tell in a second that data.dvc is still the world of today's params
and code, without the build's LightFM fit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import yaml

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import atomic_output_dir
from botify_lab.pipeline.params import PARAMS_FILE, WorldParams, check_params, read_params_file

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR_NAME = layout.WORLD.name
WORLD_FILES = ("tracks.json", "users.json", "tracks.npy", "world.json")
INPUTS_KEY = "built_from"
# Besides the world: section, what shapes the world's bytes: the simulator's code, the numeric-kernel pin, the pins.
WORLD_CODE_FOLDER = "sim"
KERNEL_PIN = "src/botify_lab/kernels.py"
REQUIREMENTS = "requirements.txt"


class WorldMismatch(RuntimeError):
    """data/ is not the world data.dvc records; the message says what to do."""


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


def _sha256(data: bytes) -> str:
    """A short digest, prefixed: DVC rewrites data.dvc in a fresh clone with its own YAML writer, which folds lines
    over 80 characters and quotes a hex run that reads as a number, so a record must stay as that writer puts it."""
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def _world_section(root: Path) -> tuple[dict, dict]:
    """params.yaml's `world:` section as written, and as checked (every default filled in)."""
    section = read_params_file(root / PARAMS_FILE).get("world")
    return section, check_params(section, str(PARAMS_FILE), WorldParams).model_dump()


def _world_section_digest(root: Path) -> str:
    return _sha256(json.dumps(_world_section(root)[1], sort_keys=True).encode())


def world_code_loaded(root: Path = REPO_ROOT) -> list[str]:
    """The repository's files among the loaded modules that can shape the world (after a build: those it used)."""
    files = set()
    for module in list(sys.modules.values()):
        path = Path(getattr(module, "__file__", None) or "/").resolve()
        if path.is_relative_to(root):
            relative = path.relative_to(root).as_posix()
            if relative.startswith(f"{WORLD_CODE_FOLDER}/") or relative == KERNEL_PIN:
                files.add(relative)
    return sorted(files)


def world_inputs(root: Path, code: list[str]) -> dict:
    """Digests of what the world is built from: params.yaml's world: section, the given code files, the pins."""
    return {
        "world_section": _world_section_digest(root),
        REQUIREMENTS: _sha256((root / REQUIREMENTS).read_bytes()),
        "code": {name: _sha256((root / name).read_bytes()) if (root / name).is_file() else None for name in code},
    }


def record_world_inputs(root: Path = REPO_ROOT) -> None:
    """Write into data.dvc's meta what the world in data/ was just built from (DVC keeps meta as it is)."""
    dvc_file = root / "data.dvc"
    record = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
    record.setdefault("meta", {})[INPUTS_KEY] = world_inputs(root, world_code_loaded(root))
    dvc_file.write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")


def changed_world_inputs(root: Path = REPO_ROOT) -> list[str]:
    """What differs from what data.dvc's world was built from (empty when nothing does): `world_section`,
    `requirements.txt` or a code file's path; `data.dvc meta` when data.dvc has no record."""
    record = yaml.safe_load((root / "data.dvc").read_text(encoding="utf-8")).get("meta", {}).get(INPUTS_KEY)
    if not record:
        return ["data.dvc meta"]
    now = world_inputs(root, list(record["code"]))
    changed = [key for key in ("world_section", REQUIREMENTS) if now[key] != record[key]]
    return changed + [name for name, digest in now["code"].items() if digest != record["code"][name]]


def course_dir(world: dict, root: Path = REPO_ROOT) -> Path:
    """The folder of the course's own files that `world.source: course` names, checked before any work."""
    folder = root / Path(world["course_dir"]).expanduser()
    missing = [name for name in ("tracks.json", "users.json") if not (folder / name).is_file()]
    if missing:
        raise WorldMismatch(
            f"world.source is 'course' but {folder} lacks {' and '.join(missing)}: point "
            "world.course_dir at the folder holding the course's tracks.json and users.json"
        )
    return folder


def generate_world_dir(root: Path = REPO_ROOT) -> Path:
    """Build the world of `params.yaml` into a scratch folder that replaces `data/` only on success."""
    from sim.settings import generator_arguments
    from sim.sources import build_world

    section, world = _world_section(root)
    source = course_dir(world, root) if world["source"] == "course" else None
    target = root / DATA_DIR_NAME
    with atomic_output_dir(target) as scratch:
        build_world(
            scratch,
            world["source"],
            generator_arguments(section),
            listening=world["listening"],
            course_catalog=source,
        )
    return target


def ensure_world(root: Path = REPO_ROOT) -> Path:
    """Make `data/` exist and match `data.dvc`, regenerating it when missing."""
    data_dir = root / DATA_DIR_NAME
    expected = recorded_world_md5(root)
    if expected is None:
        raise WorldMismatch("data.dvc is missing: run `make world` to generate the world and record it")
    complete = all((data_dir / name).is_file() for name in WORLD_FILES)
    if complete and dvc_dir_md5(data_dir) == expected:
        return data_dir
    if complete:
        raise WorldMismatch(
            f"{data_dir} does not match data.dvc (expected {expected}, found {dvc_dir_md5(data_dir)}). "
            "Delete data/ to regenerate it, or run `make world` to record a new world on purpose."
        )
    print(f"[bootstrap] {data_dir} missing: building the world from params.yaml", flush=True)
    generate_world_dir(root)
    found = dvc_dir_md5(data_dir)
    if found != expected:
        raise WorldMismatch(
            f"the regenerated world hashes to {found}, but data.dvc records {expected}. The generator or the "
            "world: parameters changed since data.dvc was written; run `make world` to record the new world "
            "on purpose (and commit data.dvc), or restore the generator."
        )
    print(f"[bootstrap] world regenerated and verified against data.dvc ({expected})", flush=True)
    return data_dir
