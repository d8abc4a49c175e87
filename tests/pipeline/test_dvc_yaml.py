"""dvc.yaml agrees with the code: every module a stage runs is a dependency, and its paths are the layout's."""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path

import pytest
import yaml
from ruamel.yaml import YAML

from botify_lab.pipeline import layout
from tests.architecture.import_graph import closure, module_file, notebook_imports
from tests.conftest import REPO_ROOT

STAGES = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
RUNNER = "botify_lab.pipeline.notebook"
SIM_SETTINGS_ONLY = {"sim", "sim.settings"}
SIM_SETTINGS_FILES = ("sim/__init__.py", "sim/settings.py")


def stage_body(stage: dict) -> dict:
    return stage["do"] if "foreach" in stage else stage


def entry_modules(command: str) -> set[str]:
    """What a stage command executes: a `python -m` module, or the notebook the runner executes."""
    module = re.match(r"python -m (\S+)", command).group(1)
    if module != RUNNER:
        return {module}
    notebook = re.search(r"(notebooks/\S+\.ipynb)", command).group(1)
    return notebook_imports(REPO_ROOT / notebook)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_a_stage_runs_is_a_dependency(name):
    body = stage_body(STAGES[name])
    deps = set(body["deps"])
    needed = set()
    modules = closure(entry_modules(body["cmd"]))
    for module in modules:
        path = module_file(module)
        if module.split(".")[0] in ("botify", "sim"):
            needed.add(module.split(".")[0])  # the service and the simulator are dependencies as whole folders
        elif path.name != "__init__.py":
            needed.add(path.relative_to(REPO_ROOT).as_posix())
    if {module for module in modules if module.split(".")[0] == "sim"} <= SIM_SETTINGS_ONLY:
        # the params schema reads the world's keys from sim.settings: a stage that needs nothing else of the
        # simulator depends on those two files, not on the whole folder (a change to the user model reruns no model)
        needed = needed - {"sim"} | ({path for path in SIM_SETTINGS_FILES} if "sim" in needed else set())
    missing = {dep for dep in needed if dep not in deps and not (dep.startswith("sim/") and "sim" in deps)}
    assert not missing, f"stage {name} runs {sorted(missing)} but does not depend on them"
    unused = {dep for dep in deps if dep.startswith("src/") and dep.endswith(".py")} - needed
    assert not unused, f"stage {name} depends on modules it never runs: {sorted(unused)}"


def declared_paths() -> set[str]:
    paths = set()
    for stage in STAGES.values():
        body = stage_body(stage)
        for group in ("deps", "outs", "metrics", "plots"):
            for entry in body.get(group, []):
                paths.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def test_layout_paths_are_the_ones_dvc_yaml_declares():
    declared = declared_paths()
    for name in (
        "WORLD",
        "CATALOG",
        "COLLECT",
        "COLLECT_LOG",
        "ROUNDS",
        "TOP_TRACKS",
        "SIMULATE",
        "SIMULATE_LOG",
        "CALIBRATE",
        "INDEXED",
        "LEADERBOARD",
        "REPORT",
        "ANALYSIS",
        "PARAMS_CHECKED",
        "I2I",
        "FIDELITY",
    ):
        assert getattr(layout, name).as_posix() in declared, f"layout.{name} is not in dvc.yaml"
    key = "${key}"
    assert layout.model_dir(key).as_posix() in declared and layout.recs_file(key).as_posix() in declared
    assert layout.metrics_file(f"train_{key}").as_posix() in declared
    for plot in (f"train_{key}", "ab_effects", "leaderboard"):
        assert layout.plot_file(plot).as_posix() in declared
    for figure in ("simulate", "ab_effects", "ab_cumulative", "calibration", "leaderboard", f"train_{key}"):
        assert layout.figure_file(figure).as_posix() in declared


def params_value(params: dict, dotted: str):
    """A params.yaml value by its dotted key (names of foreach entries such as `models.ours` are keys too)."""
    value = params
    for part in dotted.split("."):
        value = value[part]
    return value


def test_the_committed_lock_records_todays_params():
    """A lock copied from a clone after an experiment (`dvc exp run -S ...`) would make a fresh clone's `make repro`
    rerun those stages and leave `dvc.lock` dirty; every param the lock records must be today's."""
    as_dvc_reads = YAML(typ="safe")  # YAML 1.2, as DVC writes the lock: 1e-05 is a number there, a string to PyYAML
    params = as_dvc_reads.load(REPO_ROOT / "params.yaml")
    lock = as_dvc_reads.load(REPO_ROOT / "dvc.lock")["stages"]
    stale = [
        (stage, key)
        for stage, entry in lock.items()
        for key, recorded in entry.get("params", {}).get("params.yaml", {}).items()
        if params_value(params, key) != recorded
    ]
    assert lock and not stale, f"dvc.lock records params that params.yaml no longer has (run `make repro`): {stale}"


def test_the_committed_lock_records_todays_code():
    """A code file edited after the last complete run (a constant added to layout.py, say) leaves the lock's hash of
    it stale: every stage reading it would rerun in the README's experiment, and a fresh clone's `make repro` would
    leave `dvc.lock` dirty. DVC itself (its status, as `make repro` asks it) must find no dependency modified but
    the pipeline's own outputs and the world, which a fresh clone does not have and the run writes."""
    from dvc.repo import Repo

    lock = YAML(typ="safe").load(REPO_ROOT / "dvc.lock")["stages"]
    written = {Path(out["path"]) for entry in lock.values() for out in entry.get("outs", [])} | {Path("data")}
    with contextlib.chdir(REPO_ROOT), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        repo = Repo(str(REPO_ROOT))
        try:
            status = repo.status()
        finally:
            repo.close()

    def written_by_the_pipeline(dep: str) -> bool:
        path = Path(dep)
        return any(out == path or out in path.parents or path in out.parents for out in written)

    stale = sorted(
        {
            dep
            for changes in status.values()
            for change in changes
            if isinstance(change, dict)
            for dep, state in change.get("changed deps", {}).items()
            if state == "modified" and not written_by_the_pipeline(dep)
        }
    )
    assert not stale, f"dvc.lock records older versions of {stale} (run `make repro` and commit dvc.lock)"
