"""The bootstrap regenerates a missing world, proves it is the one data.dvc records, and refuses any other."""

import os
import subprocess
import sys

import pytest
import yaml

from botify_lab.pipeline import world as bootstrap
from tests.conftest import world_knobs

TINY_WORLD = {"world": {"seed": 3, "tracks": 600, "users": 50, "dim": 8, **world_knobs()}}


@pytest.fixture
def project(tmp_path):
    """A git+DVC folder with a tiny world recorded in data.dvc by DVC itself."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_WORLD))
    subprocess.run(["git", "init", "--quiet"], cwd=tmp_path, check=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / ".site-cache")}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--quiet"], cwd=tmp_path, check=True, env=env)
    bootstrap.generate_world_dir(tmp_path)
    subprocess.run([sys.executable, "-m", "dvc", "add", "--quiet", "data"], cwd=tmp_path, check=True, env=env)
    return tmp_path


def test_directory_hash_equals_dvcs_own(project):
    assert bootstrap.dvc_dir_md5(project / "data") == bootstrap.recorded_world_md5(project)


def test_missing_world_is_regenerated_and_verified(project, capsys):
    original = {path.name: path.read_bytes() for path in (project / "data").iterdir()}
    for path in (project / "data").iterdir():
        path.unlink()
    (project / "data").rmdir()
    bootstrap.ensure_world(project)
    assert {path.name: path.read_bytes() for path in (project / "data").iterdir()} == original
    assert "verified against data.dvc" in capsys.readouterr().out


def test_a_different_world_fails_loudly_and_leaves_data_dvc_alone(project):
    recorded = (project / "data.dvc").read_text()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["world"]["seed"] = 4
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for path in (project / "data").iterdir():
        path.unlink()
    (project / "data").rmdir()
    with pytest.raises(bootstrap.WorldMismatch, match="make world"):
        bootstrap.ensure_world(project)
    assert (project / "data.dvc").read_text() == recorded


def test_an_edited_world_is_refused(project):
    with open(project / "data" / "users.json", "ab") as handle:
        handle.write(b"\n")
    with pytest.raises(bootstrap.WorldMismatch, match="does not match data.dvc"):
        bootstrap.ensure_world(project)


def test_dvc_hints_are_dropped_and_everything_else_passes(tmp_path):
    import io

    from botify_lab.pipeline.bootstrap import pass_through_without_hints

    text = (
        b"Running stage 'collect':\n> python -m botify_lab.stages.collect\nepisodes: 10%\r"
        b"episodes: 100%\rdone\nUpdating lock file 'dvc.lock'\n\nTo track the changes with git, run:\n\n"
        b"\tgit add dvc.lock\n\nTo enable auto staging, run:\n\n\tdvc config core.autostage true\n"
        b"Use `dvc push` to send your updates to remote storage.\n"
    )
    read, write = os.pipe()
    os.write(write, text)
    os.close(write)
    out = io.BytesIO()
    pass_through_without_hints(read, out)
    os.close(read)
    assert out.getvalue() == (
        b"Running stage 'collect':\n> python -m botify_lab.stages.collect\nepisodes: 10%\r"
        b"episodes: 100%\rdone\nUpdating lock file 'dvc.lock'\n"
    )


def test_world_source_course_builds_the_course_world_and_records_it(project, upstream_world):
    """`world.source: course` (the folder relative to params.yaml) builds data/ over the course's own files."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["world"].update(source="course", course_dir=os.path.relpath(upstream_world, project))
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for path in (project / "data").iterdir():
        path.unlink()
    with pytest.raises(bootstrap.WorldMismatch, match="make world"):
        bootstrap.ensure_world(project)  # data.dvc still records the generated world: refused, not rewritten
    for name in ("tracks.json", "users.json"):
        assert (project / "data" / name).read_bytes() == (upstream_world / name).read_bytes()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(project / ".site-cache")}
    subprocess.run([sys.executable, "-m", "dvc", "add", "--quiet", "data"], cwd=project, check=True, env=env)
    assert bootstrap.ensure_world(project) == project / "data"


def test_world_source_course_without_its_files_says_where_they_are_expected(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["world"].update(source="course", course_dir="no-such-folder")
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    before = {path.name: path.read_bytes() for path in (project / "data").iterdir()}
    with pytest.raises(bootstrap.WorldMismatch, match="no-such-folder lacks tracks.json and users.json"):
        bootstrap.generate_world_dir(project)
    assert {path.name: path.read_bytes() for path in (project / "data").iterdir()} == before


def test_repro_passes_dvc_repro_options_on_and_refuses_zero_jobs(monkeypatch, capsys):
    from botify_lab.pipeline import bootstrap as entry

    calls = []
    monkeypatch.setattr(entry, "command_repro", lambda extra, jobs, timings: calls.append((extra, jobs, timings)))
    assert entry.main(["repro", "--force", "train@ours", "--jobs", "3"]) == 0
    assert entry.main(["repro"]) == 0
    assert calls == [(["train@ours", "--force"], 3, None), ([], entry.default_jobs(), None)]
    with pytest.raises(SystemExit):
        entry.main(["repro", "--jobs", "0"])
    assert "--jobs must be at least 1" in capsys.readouterr().err
