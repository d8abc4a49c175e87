"""End to end: a clone of the committed repo runs the real `dvc repro` with tiny sizes, a second fresh clone writes the
same bytes, and the clone then behaves like a DVC repo should (clean status, nothing to redo, a parameter change
reruns only what depends on it). The clone records a small world with `make world`'s command (a tenth of the
catalog: every stage scales with it) and adds a third model to `models:` and nothing else, which must then be
trained, exported and served in the leaderboard."""

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import yaml

from botify_lab.pipeline.params import PARAMS_TRACE
from botify_lab.stages.report import EXTERNAL_REFERENCE
from tests.conftest import REPO_ROOT, merged

pytestmark = pytest.mark.slow

# The labels of params.yaml's recommenders of one's own (examples/recommenders/), served in every leaderboard.
EXAMPLES = ["Contextual on the first track", "StickyArtist, TopPop after a skip", "User history"]

TINY = {
    "world": {"source": "generated", "tracks": 5000, "users": 1000},  # the listening world has its own tests
    "collect": {"episodes": 1500, "processes": 1},
    "train": {"max_epochs": 4, "batch_size": 512},
    "models": {
        "contextual": {"embedding_dim": 4},
        "contextual_seminar": {"embedding_dim": 3},
        "ours": {"embedding_dim": 8},
        "added": {
            "label": "Added",
            "embedding_dim": 6,
            "similarity": "mlp",
            "loss": "mae",
            "mlp_hidden": 8,
            "mlp_sigmoid": True,
            "optimizer": "lazy_adam",
            "neighbours": 7,
            "exclude_self": False,
        },
    },
    "simulate": {"episodes": 300, "processes": 1},
    "calibrate": {"seeds": 1, "episodes": 200, "random_episodes": 200, "processes": 1},
    "indexed": {"trials": 2, "min_user_positives": 1, "min_track_positives": 1},
    "fidelity": {
        "seeds": 1,
        "gammas": [{"gamma": 0.9, "episodes": 200}, {"gamma": 0.8, "episodes": 200}],
        "processes": 1,
        "top_pop_seeds": 1,
        "top_pop_episodes": 200,
        "reference_episodes": 200,
    },
    "leaderboard": {"episodes": 300, "processes": 1},
    "ope": {"episodes": 1500, "processes": 1},
    # The README's sweep command widens embedding_dim from [128] to [128, 256], as on the default grid.
    "sweep": {
        "grid": {"embedding_dim": [128], "similarity": ["dot", "mlp_sigmoid"], "loss": ["mse"], "lr": [0.001]},
        "episodes": 600,
        "processes": 1,
    },
}
SWEEP_VARIANTS = ["128-dot-mse-0.001", "128-mlp_sigmoid-mse-0.001"]
WIDENED_VARIANTS = ["256-dot-mse-0.001", "256-mlp_sigmoid-mse-0.001"]


def run(args, cwd, env, timeout=900):
    completed = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, f"{args} failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout + completed.stderr


def clone_environment(clone: Path, base: Path, **extra: str) -> dict:
    """An environment that uses the clone's own code, this venv and DVC state of its own."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(clone), str(clone / "src")]),
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(base / "dvc-site-cache"),
        "DVC_GLOBAL_CONFIG_DIR": str(base / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(base / "dvc-system"),
        "SHELL": "/bin/bash",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@localhost",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@localhost",
        **extra,
    }


def started(args, cwd, env, output: Path) -> subprocess.Popen:
    """A command running in the background, its stdout and stderr in `output`."""
    with open(output, "wb") as handle:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)


def finished(process: subprocess.Popen, output: Path, timeout=1200) -> str:
    process.wait(timeout=timeout)
    text = output.read_text(errors="replace")
    assert process.returncode == 0, f"{process.args} failed ({process.returncode}):\n{text}"
    return text


def tracked_outputs(clone: Path) -> dict[str, bytes]:
    """The git-tracked outputs of a run (dvc.lock, which holds every output's hash, metrics and plots)."""
    listed = subprocess.run(
        ["git", "ls-files", "dvc.lock", "metrics", "plots"], cwd=clone, capture_output=True, text=True
    )
    return {name: (clone / name).read_bytes() for name in listed.stdout.split()}


class InOrder:
    """Commands that run one after another in a background thread, each result a future, so that a clone's work
    uses the second core while the tests use the other clone; `stop` kills the one running and drops the rest."""

    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._running: subprocess.Popen | None = None
        self._stopped = False

    def submit(self, step, *args) -> Future:
        return self._executor.submit(step, self, *args)

    def run(self, args, cwd, env, output: Path) -> str:
        if self._stopped:
            raise RuntimeError("stopped")
        self._running = started(args, cwd, env, output)
        try:
            return finished(self._running, output)
        finally:
            self._running = None

    def stop(self) -> None:
        self._stopped = True
        running = self._running
        if running is not None and running.poll() is None:
            running.kill()  # never left running behind the tests
        self._executor.shutdown(wait=True, cancel_futures=True)


def twin_first_run(queue: InOrder, process: subprocess.Popen, twin: Path, output: Path) -> tuple[str, dict]:
    """The twin's `make repro` (started with the clone's): its output and its git-tracked outputs."""
    return finished(process, output), tracked_outputs(twin)


def copied(queue: InOrder, twin_run: Future, twin: Path, copy: Path) -> Path:
    """A copy of the twin as its first run left it (git, DVC cache, outputs), for work beside the twin's own."""
    twin_run.result()
    shutil.copytree(twin, copy, symlinks=True)
    return copy


def sweep_widened(queue: InOrder, copy: Future, env: dict) -> tuple[str, dict]:
    """The README's sweep block, verbatim: its output and the sweep's metrics right after it."""
    clone = copy.result()
    command = ["bash", "-e", "-c", readme_block("The homework's ablation: a sweep")]
    output = queue.run(command, clone, readme_env(clone, env), clone.parent / "sweep.log")
    return output, json.loads((clone / "metrics" / "sweep.json").read_text())


def round_added(queue: InOrder, twin: Path, env: dict) -> str:
    """The README's loop-of-days block, verbatim."""
    command = ["bash", "-e", "-c", readme_block("The loop of days")]
    return queue.run(command, twin, readme_env(twin, env), twin.parent / "round.log")


def spark_experiment(queue: InOrder, copy: Future, env: dict) -> tuple[str, dict, dict]:
    """`dvc exp run -S analysis.engine=spark`: its output, and the analysis's files before and after it."""
    clone = copy.result()
    paths = ("metrics/ab.json", "build/analysis/ab.json")
    before = {path: json.loads((clone / path).read_text()) for path in paths}
    command = [sys.executable, "-m", "dvc", "exp", "run", "-S", "analysis.engine=spark"]
    output = queue.run(command, clone, env, clone.parent / "spark.log")
    after = {path: json.loads((clone / path).read_text()) for path in paths}
    return output, before, after


@dataclass
class TinyRun:
    """Two clones of one commit with tiny sizes, each reproduced from nothing, at the same time on the two cores.

    `clone` serves the tests that read or change a run; `twin` is the second fresh clone, whose outputs prove that
    `make repro` writes the same bytes wherever it runs, however many stages at a time. Its run goes on in the
    background while the tests use `clone`. Then the twin runs the README's loop-of-days command while `twin_copy`, a
    copy of the twin as its run left it, runs the README's sweep command and the Spark experiment (each a future)."""

    clone: Path
    env: dict
    output: str
    twin: Path
    twin_copy: Path
    first_outputs: dict  # the clone's git-tracked outputs (dvc.lock, metrics, plots) as its first run left them
    twin_run: Future  # the twin's first run: its output and its git-tracked outputs
    sweep_widened: Future
    round_added: Future
    spark_experiment: Future


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    if subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout with commits")
    base = tmp_path_factory.mktemp("repro")
    clone, twin, twin_copy = base / "clone", base / "twin" / "clone", base / "twin-copy" / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    params = merged(yaml.safe_load((clone / "params.yaml").read_text()), TINY)
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = clone_environment(clone, base, **{PARAMS_TRACE: str(base / "params-read")})
    twin_env = clone_environment(twin, twin.parent)
    copy_env = clone_environment(twin_copy, twin_copy.parent)
    run([sys.executable, "-m", "botify_lab.pipeline.bootstrap", "world"], clone, env)  # records the small world
    shutil.rmtree(clone / "data")  # so that `make repro` regenerates it and checks it against data.dvc
    subprocess.run(["git", "commit", "--quiet", "-am", "tiny sizes"], cwd=clone, env=env, check=True)
    subprocess.run(["git", "clone", "--quiet", str(clone), str(twin)], check=True)
    repro = [sys.executable, "-m", "botify_lab.pipeline.bootstrap", "repro"]
    # The twin runs a plain `dvc repro` (one stage at a time), the clone the scheduler's stages at once: equal bytes
    # in the two (test_a_second_fresh_clone_...) also prove the scheduler leaves what DVC alone leaves. The twin's
    # run goes on in the background while the tests use the clone, followed by the twin's own work.
    twin_repro = started([*repro, "--jobs", "1"], twin, twin_env, base / "twin-repro.log")
    try:
        output = run(repro, clone, env)
    except BaseException:
        twin_repro.kill()  # never left running behind a failure
        twin_repro.wait()
        raise
    # What the first run's stages read, beside what its dvc.lock says they depend on (later tests change both).
    shutil.copytree(base / "params-read", base / "first-run-params-read")
    first_outputs = tracked_outputs(clone)  # holds its dvc.lock
    # Two queues, so that the twin's later work runs on both cores once the tests no longer need them.
    in_twin, in_copy = InOrder(), InOrder()
    twin_future = in_twin.submit(twin_first_run, twin_repro, twin, base / "twin-repro.log")
    copy_future = in_twin.submit(copied, twin_future, twin, twin_copy)
    round_future = in_twin.submit(round_added, twin, twin_env)
    sweep_future = in_copy.submit(sweep_widened, copy_future, copy_env)
    spark_future = in_copy.submit(spark_experiment, copy_future, copy_env)
    try:
        yield TinyRun(
            clone, env, output, twin, twin_copy, first_outputs, twin_future, sweep_future, round_future, spark_future
        )
    finally:
        if twin_repro.poll() is None:
            twin_repro.kill()  # never left running behind the tests
        in_copy.stop()
        in_twin.stop()


@pytest.fixture(scope="session")
def tiny_clone(tiny_run):
    """The clone the tests read and change, its environment and its first run's output."""
    return tiny_run.clone, tiny_run.env, tiny_run.output


def dvc(clone, env, *args):
    return run([sys.executable, "-m", "dvc", *args], clone, env)


def test_repro_produces_metrics_figures_and_reports(tiny_clone):
    clone, _, output = tiny_clone
    assert "world regenerated and verified against data.dvc" in output
    ab = json.loads((clone / "metrics" / "ab.json").read_text())
    assert ab["experiment"] == "HOMEWORK"
    assert set(ab["effects"]) == {"T1"}
    effect = ab["effects"]["T1"]["mean_time_per_session"]
    assert effect["lower"] <= effect["effect"] <= effect["upper"]
    for name in ("contextual", "ours", "added"):
        train = json.loads((clone / "metrics" / f"train_{name}.json").read_text())
        test = train["test"]  # four epochs on a tiny log: the numbers exist and the baselines are ordered
        assert 0 < test["model_mse"] < 1 and 0 < test["train_mean_mse"] < test["random_mse"]
    exported = json.loads((clone / "metrics" / "export_added.json").read_text())
    assert exported["k"] == 7 and exported["exclude_self"] is False
    lists = [orjson.loads(line)["recommendations"] for line in (clone / "build" / "recs" / "added.json").open("rb")]
    assert {len(neighbours) for neighbours in lists} == {7}
    assert json.loads((clone / "metrics" / "export_contextual.json").read_text())["k"] == 100
    assert json.loads((clone / "metrics" / "calibration.json").read_text())["arms"]["T2"]
    leaderboard = json.loads((clone / "metrics" / "leaderboard.json").read_text())
    assert list(leaderboard["recommenders"].values()) == [
        "Random",
        "StickyArtist",
        "TopPop(100)",
        "User-based",
        "Collaborative (Indexed)",
        "Contextual",
        "Diverse i2i",
        "Contextual (seminar)",
        "Ours",
        "Added",
        *EXAMPLES,
        "Reference: true neighbours",
    ]
    assert set(leaderboard["effects"]) == {f"T{i}" for i in range(1, 14)}
    fidelity = json.loads((clone / "metrics" / "fidelity.json").read_text())
    assert fidelity["checks"] > 50 and fidelity["training_data"]["pairs"] > 0
    checks = json.loads((clone / "build" / "fidelity" / "checks.json").read_text())
    training_checks = [row["statistic"] for row in checks if row["group"] == "Training data (week 4)"]
    assert training_checks == ["listen-time variance", "model test MSE / train mean's"]
    feedback = json.loads((clone / "metrics" / "feedback.json").read_text())
    assert list(feedback["rounds"]) == ["round0", "round1", "round2", "round3"]
    assert set(feedback["rounds"]["round0"]["arms"]) == {"random", "sticky_artist", "all"}
    assert feedback["rounds"]["round3"]["model"] == "contextual" and 0 < feedback["final"]["model_mse"] < 1
    assert "the loop of days" in (clone / "reports" / "html" / "index.html").read_text()
    cuped = ab["cuped"]  # the covariate: the same users' metric in the loop's last round, untouched by the test
    assert "build/rounds/round3/log" in cuped["covariate"] and cuped["metrics"]["mean_time_per_session"]["theta"] > 0
    assert set(cuped["effects"]["T1"]["mean_time_per_session"]) >= {"effect", "lower", "upper", "mde"}
    ope = json.loads((clone / "metrics" / "ope.json").read_text())
    assert list(ope["estimates"]) == ["random", "sticky_artist"]
    # every leaderboard recommender but the classes of one's own, which give no distribution to weigh
    assert list(ope["online"]) == [label for label in leaderboard["recommenders"].values() if label not in EXAMPLES]
    for logger, targets in ope["estimates"].items():
        assert list(targets) == list(ope["online"])
        for label, row in targets.items():
            assert row["IPS"]["ci_low"] <= row["IPS"]["value"] <= row["IPS"]["ci_high"], (logger, label)
    # Random replayed on its own log: every weight is 1, so IPS and SNIPS are the log's mean reward, fully supported
    itself = ope["estimates"]["random"]["Random"]
    assert itself["support"] == 1.0 and itself["IPS"]["value"] == pytest.approx(itself["SNIPS"]["value"])
    assert itself["IPS"]["effective_decisions"] == pytest.approx(ope["logging"]["loggers"]["random"]["decisions"])
    # StickyArtist's log cannot see a Random draw outside the artist, nor Random's log a narrow list well
    assert ope["estimates"]["sticky_artist"]["Random"]["support"] < 0.05
    assert ope["estimates"]["sticky_artist"]["StickyArtist"]["support"] == 1.0
    for figure in (
        "ab_effects.png",
        "ab_cumulative.png",
        "simulate.png",
        "train_ours.png",
        "calibration.png",
        "leaderboard.png",
        "feedback_loop.png",
        "ope.png",
    ):
        assert (clone / "reports" / "figures" / figure).stat().st_size > 1000
    index = (clone / "reports" / "html" / "index.html").read_text()
    assert "ab_analysis.html" in index and "train_ours.html" in index
    page = (clone / "reports" / "html" / "ab_analysis.html").read_text()
    assert "data:image/png;base64" in page
    assert not EXTERNAL_REFERENCE.findall(page), "the report must not load anything from the network"


def listed_params(lock_stage: dict) -> set[str]:
    """A stage's params.yaml keys as dvc.lock resolved them (a foreach stage's `models.${key}` named)."""
    return set(lock_stage.get("params", {}).get("params.yaml", {}))


# Keys a stage reads only in some settings, listed so that DVC reruns it when they matter: (stage, key) -> when.
READ_ONLY_WHEN = {
    ("analyze", "spark"): "analysis.engine is spark (the tiny run uses pandas)",
    ("simulate", "recommenders"): "simulate.treatment names a recommender of one's own",
    ("report", "recommenders"): "simulate.treatment names a recommender of one's own",
}


def covers(listed: str, read: str) -> bool:
    return read == listed or read.startswith(listed + ".")


def test_every_stage_lists_exactly_the_params_it_reads(tiny_run):
    """Each stage's `params:` in dvc.yaml is what DVC reruns it on: a key read but not listed leaves a stale output
    when it changes, a key listed but not read reruns the stage for nothing."""
    base = tiny_run.clone.parent
    stages = yaml.safe_load(tiny_run.first_outputs["dvc.lock"])["stages"]
    reads = base / "first-run-params-read"
    traced = {path.stem for path in reads.glob("*.keys")} - {"params"}  # `params` checks the whole file
    assert traced <= set(stages) and len(traced) > len(stages) // 2
    # DVC keeps the lock entries of stages no longer in the pipeline (here the committed lock's sweep variants, which
    # the tiny grid leaves out): only the pipeline's own stages count.
    pipeline = set(dvc(tiny_run.clone, tiny_run.env, "stage", "list", "--name-only").split())
    problems = []
    for stage in sorted(set(stages) & pipeline - {"params"}):  # a stage that never reads params.yaml has no trace
        read = set((reads / f"{stage}.keys").read_text().split()) if stage in traced else set()
        listed = listed_params(stages[stage])
        problems += [
            f"{stage} reads {key} but dvc.yaml does not list it"
            for key in sorted(read)
            if not any(covers(entry, key) for entry in listed)
        ]
        problems += [
            f"{stage} lists {entry} but never reads it"
            for entry in sorted(listed)
            if not any(covers(entry, key) for key in read) and (stage, entry) not in READ_ONLY_WHEN
        ]
    assert not problems, "\n".join(problems)


def test_status_is_clean_and_world_untouched(tiny_clone):
    clone, env, _ = tiny_clone
    assert "Data and pipelines are up to date" in dvc(clone, env, "status")
    assert subprocess.run(["git", "diff", "--exit-code", "--quiet", "data.dvc"], cwd=clone).returncode == 0
    second = dvc(clone, env, "repro")
    assert "Running stage" not in second


@pytest.mark.awaits_background
def test_a_second_fresh_clone_writes_every_output_byte_for_byte(tiny_run):
    """`make repro` in a fresh clone must record the committed hashes: a second clone, run from nothing at the same
    time, writes the same bytes for every output (dvc.lock holds each one's hash) and the same tracked metrics, the
    first running its stages several at a time, the second one by one (a plain `dvc repro`)."""
    twin_output, twin = tiny_run.twin_run.result(timeout=1200)
    assert "Running stage 'report'" in twin_output and "report | Running stage 'report'" in tiny_run.output
    assert re.search(r"stages ran, \d at a time", tiny_run.output) and "stages ran" not in twin_output
    first = tiny_run.first_outputs
    assert "dvc.lock" in twin and len(twin) > 10 and first.keys() == twin.keys()
    differ = [name for name in first if first[name] != twin[name]]
    lines = [first["dvc.lock"].decode().splitlines(), twin["dvc.lock"].decode().splitlines()]
    difference = "\n".join(difflib.unified_diff(*lines, lineterm="", n=1))
    assert not differ, f"two fresh clones wrote different {differ}:\n{difference[:4000]}"


def readme_block(heading: str) -> str:
    """The first bash block under a README heading, as a user would paste it."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index(f"\n## {heading}\n") :]
    return section[section.index("```bash\n") + len("```bash\n") : section.index("\n```", section.index("```bash"))]


def readme_env(clone, env) -> dict:
    """The environment of a user who pasted README commands in the clone: its .venv (this venv), a plain PATH."""
    venv = clone / ".venv"
    if not venv.exists():
        venv.symlink_to(Path(sys.executable).parents[1])
    return {**env, "PATH": "/usr/local/bin:/usr/bin:/bin"}


def run_readme_block(clone, env, heading: str) -> str:
    """Run the README's commands verbatim in the clone."""
    return run(["bash", "-e", "-c", readme_block(heading)], clone, readme_env(clone, env), timeout=900)


def test_readme_experiment_commands_work_as_written(tiny_clone):
    clone, env, _ = tiny_clone
    output = run_readme_block(clone, env, "Experiments: change a parameter and compare")
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    assert ran == {"params", "train@ours", "export@ours", "simulate", "analyze", "leaderboard", "ope", "report"}
    assert "models.ours.similarity" in output and "cosine" in output and "dot" in output  # dvc params diff
    table = [line for line in output.splitlines() if line.startswith("| ")]
    assert table and "models.ours.similarity" in table[0] and "metrics/ab.json:" in table[0]  # make compare


def test_readme_off_policy_and_cuped_commands_work_as_written(tiny_clone):
    clone, env, _ = tiny_clone
    output = run_readme_block(clone, env, "Judging a recommender before serving it: off-policy evaluation and CUPED")
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    assert ran == {"params", "ope", "report"}, ran
    assert "with CUPED (each user's same metric in build/rounds/round3/log (COLLECT))" in output
    assert re.search(r"^T1 +mean_time_per_session .* [\d.]+%$", output, re.MULTILINE), output
    assert "warning" not in output  # the loop's rounds never held the homework's arms
    ope = json.loads((clone / "metrics" / "ope.json").read_text())  # an unshrunk reward model still gives every DR
    assert all(row["DR"]["value"] is not None for rows in ope["estimates"].values() for row in rows.values())


def test_off_policy_judging_in_processes_writes_what_one_process_writes(tiny_clone, tmp_path):
    """The `ope` stage judges its (logging arm, recommender) pairs in `ope.processes` forked processes; any count
    writes the same metrics and plot. Run on the clone's current inputs, whose outputs it leaves as it found them."""
    clone, env, _ = tiny_clone
    outputs = [clone / "metrics" / "ope.json", clone / "plots" / "ope.csv", clone / "reports" / "figures" / "ope.png"]
    kept = {path: path.read_bytes() for path in outputs}
    params = yaml.safe_load((clone / "params.yaml").read_text())
    written = {}
    try:
        for processes in (1, 3):
            params["ope"]["processes"] = processes
            params_file = tmp_path / f"params-{processes}.yaml"
            params_file.write_text(yaml.safe_dump(params, sort_keys=False))
            run([sys.executable, "-m", "botify_lab.stages.ope", "--params", str(params_file)], clone, env)
            written[processes] = [path.read_bytes() for path in outputs[:2]]
    finally:
        for path, data in kept.items():
            path.write_bytes(data)
    assert written[1] == written[3]
    assert json.loads(written[1][0])["estimates"]


def test_the_course_workflow_by_hand(tiny_clone):
    clone, env, _ = tiny_clone
    output = run_readme_block(clone, env, "The course's workflow by hand")
    assert "serving at http://127.0.0.1:5000" in output
    assert re.search(r"TOP_POP: [\d,]+ events", output)
    for arm in ("T1", "T2", "T3"):
        assert re.search(rf"^{arm} +mean_time_per_session", output, re.MULTILINE), output
    assert (clone / "log" / "top_pop.png").stat().st_size > 5000


def test_report_pages_in_a_real_browser(tiny_clone, tmp_path):
    """Every page renders offline with its figures inline and without stderr blocks; the front page says what was
    compared and shows the tables and figures."""
    import base64
    import io
    import re

    from matplotlib import image

    from tests.pipeline.browser import render

    clone, _, _ = tiny_clone
    pages = sorted((clone / "reports" / "html").glob("*.html"))
    assert len(pages) >= 10
    for page in pages:
        dom, requests = render(page, screenshot=tmp_path / f"{page.stem}.png" if page.stem == "index" else None)
        assert requests == [], f"{page.name} requested {requests}"
        assert 'data-mime-type="application/vnd.jupyter.stderr"' not in dom, f"{page.name} shows a stderr block"
        figures = re.findall(r'src="data:image/png;base64,([^"]+)"', dom)
        if page.stem.startswith(("train_", "ab_analysis", "simulate", "calibration", "leaderboard", "index")):
            assert figures, f"{page.name} has no figure"
        for data in figures:
            assert image.imread(io.BytesIO(base64.b64decode(data)), format="png").shape[0] > 50
    index = (clone / "reports" / "html" / "index.html").read_text()
    for text in (
        "The homework A/B test",
        "similarity, dimension",
        "The course's leaderboard",
        "TOP_POP",
        "Metrics",
        "train_ours.html",
        "The real logs",
        "checks",
        'href="fidelity.html"',
        "Judged before serving",
        "With CUPED",
    ):
        assert text in index
    board = index[index.index("The course's leaderboard") : index.index("The real logs")]
    table = board[: board.index("</table>")]
    assert "n/a" not in table, "every leaderboard arm has a detectable effect"
    assert (tmp_path / "index.png").stat().st_size > 20_000


def test_a_students_recommender_in_a_file_of_their_own(tiny_clone):
    """The homework as students did it: the README's class in a file outside the package, named in params.yaml only,
    served in the leaderboard and tested against the course's Contextual by `dvc exp run`; DVC tracks the file."""
    clone, env, _ = tiny_clone
    output = run_readme_block(clone, env, "Your own recommender: the course's homework")
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    assert {"recommender@mine", "leaderboard", "simulate", "analyze", "report"} <= ran, ran
    assert not {name for name in ran if name.startswith(("train@", "export@", "loop@", "recommender@first"))}, ran
    leaderboard = json.loads((clone / "metrics" / "leaderboard.json").read_text())
    assert list(leaderboard["recommenders"].values())[-2:] == ["Mine", "Reference: true neighbours"]
    ab = json.loads((clone / "metrics" / "ab.json").read_text())
    effect = ab["effects"]["T1"]["mean_time_per_session"]
    assert ab["arms"]["T1"]["sessions"] > 0 and effect["lower"] <= effect["effect"] <= effect["upper"]
    assert "recommenders.mine</code>: Mine of homework/mine.py" in (clone / "reports/html/index.html").read_text()
    config = yaml.safe_load((clone / "build" / "simulate" / "service.yaml").read_text())
    assert config["experiments"][0]["arms"][1]["recommender"].endswith("homework/mine.py:Mine")
    with (clone / "homework" / "mine.py").open("a") as file:
        file.write("# a student's second try\n")
    assert "recommender@mine" in dvc(clone, env, "status")


# The second clone's background work: the tests marked awaits_background wait for it, so they run after the rest of
# the suite (tests/pipeline/conftest.py).


def assert_same_numbers(left, right, path="") -> None:
    """Equal structure and strings; floats equal to 1e-9 relative (Spark sums in another order than pandas)."""
    if isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys(), f"{path}: keys differ"
        for key in left:
            assert_same_numbers(left[key], right[key], f"{path}.{key}")
    elif isinstance(left, list):
        assert isinstance(right, list) and len(left) == len(right), f"{path}: lengths differ"
        for index, (a, b) in enumerate(zip(left, right)):
            assert_same_numbers(a, b, f"{path}[{index}]")
    elif isinstance(left, float) or isinstance(right, float):
        assert right == pytest.approx(left, rel=1e-9, abs=1e-12), f"{path}: {left} != {right}"
    else:
        assert left == right, f"{path}: {left!r} != {right!r}"


@pytest.mark.awaits_background
def test_spark_engine_experiment_gives_the_same_metrics(tiny_run):
    """`dvc exp run -S analysis.engine=spark` reruns only the analysis, on Spark, and lands on the same numbers. It
    runs in the twin's copy, after the sweep was widened there."""
    output, before, after = tiny_run.spark_experiment.result(timeout=1800)
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    assert "analyze" in ran and ran <= {"params", "analyze", "report"}, ran
    assert yaml.safe_load((tiny_run.twin_copy / "params.yaml").read_text())["analysis"]["engine"] == "spark"
    for path, document in before.items():
        assert_same_numbers(document, after[path], path)


def test_the_sweep_tests_every_variant_against_the_same_control_traffic(tiny_clone):
    """Each variant of the grid has its row: offline metrics, the online effect with its Holm-corrected p-value; the
    control arm of every variant's test is the same users with the same sessions (common random numbers)."""
    clone, _, _ = tiny_clone
    sweep = json.loads((clone / "metrics" / "sweep.json").read_text())
    assert list(sweep["variants"]) == SWEEP_VARIANTS and sweep["control"] == "contextual"
    for row in sweep["variants"].values():
        assert 0 < row["test_mse"] < row["train_mean_mse"] * 3 and 0 <= row["hit_rate"] <= 1
        assert row["lower"] <= row["effect"] <= row["upper"] and row["p_value"] <= row["p_holm"] <= 1
    assert sweep["rank_correlations"]["ndcg"] == {
        "spearman": None,
        "p_value": None,
        "variants": 2,
        "larger_is_better": True,
    }
    records = [json.loads((clone / "build" / "sweep" / name / "variant.json").read_text()) for name in SWEEP_VARIANTS]
    controls = [
        (record["online"]["arms"]["C"], record["online"]["mean_time_per_session"]["control_mean"]) for record in records
    ]
    assert controls[0] == controls[1] and controls[0][0]["users"] > 0
    assert records[1]["params"]["similarity"] == "mlp_sigmoid" and records[1]["offline"]["test"]["model_mse"] > 0
    # rounded as the training records are: the last digits of a float loss differ across processors
    assert all(round(row["val_loss"], 6) == row["val_loss"] for record in records for row in record["history"])
    assert not (clone / "build" / "sweep" / SWEEP_VARIANTS[0] / "ab" / "log").exists()  # the log is not kept
    plot = (clone / "plots" / "sweep.csv").read_text().splitlines()
    assert len(plot) == 3 and "p_holm" in plot[0]
    index = (clone / "reports" / "html" / "index.html").read_text()
    assert "The homework's ablation" in index and SWEEP_VARIANTS[0] in index
    assert sweep["control_mean"] == controls[0][1]


@pytest.mark.awaits_background
def test_widening_the_sweep_runs_only_the_new_variants_and_the_table(tiny_run):
    """The README's sweep command adds embedding_dim 256: its two variants run, the two of 128 stay cached. It runs
    in the twin's copy, while the twin adds a round."""
    output, sweep = tiny_run.sweep_widened.result(timeout=1800)
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    assert ran == {"params", *(f"sweep_variant@{name}" for name in WIDENED_VARIANTS), "sweep", "report"}, ran
    assert list(sweep["variants"]) == [*SWEEP_VARIANTS, *WIDENED_VARIANTS]
    assert sweep["rank_correlations"]["ndcg"]["variants"] == 4
    table = [line for line in output.splitlines() if line.startswith("| ")]
    assert table and "sweep.grid.embedding_dim" in table[0]  # make compare


@pytest.mark.awaits_background
def test_adding_a_round_reruns_only_it_and_what_reads_the_logs(tiny_run):
    """The README's command adds round4 to the loop of days: the earlier rounds and the stages that read only round 0
    stay cached; the new round serves the model fitted on the last `collect.window` rounds (1-3), and every model
    then trains on rounds 2-4. It runs in the second clone, while its copy widens the sweep."""
    clone, output = tiny_run.twin, tiny_run.round_added.result(timeout=1800)
    ran = {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
    assert {"loop@round4", "feedback", "train@contextual", "train@ours", "leaderboard", "fidelity"} <= ran, ran
    cached = {
        "collect",
        "loop@round1",
        "loop@round2",
        "loop@round3",
        "toppop",
        "indexed",
        "calibrate",
        "toppop_offline",
        "diverse_i2i",
    }
    assert not ran & cached, ran & cached
    summary = json.loads((clone / "build" / "rounds" / "round4" / "round.json").read_text())
    assert summary["first_day"] == 4 and summary["model"]["rounds"] == ["round1", "round2", "round3"]
    assert summary["arms"]["contextual"]["sessions"] == TINY["collect"]["episodes"]
    feedback = json.loads((clone / "metrics" / "feedback.json").read_text())
    assert list(feedback["rounds"]) == ["round0", "round1", "round2", "round3", "round4"]
    training = json.loads((clone / "build" / "models" / "ours" / "training.json").read_text())
    assert training["rounds"] == ["round2", "round3", "round4"]
