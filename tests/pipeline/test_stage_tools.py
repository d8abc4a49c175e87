"""The pieces every stage relies on: atomic outputs, the notebook runner, and the offline HTML report."""

import hashlib

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from botify.config import ConfigError
from botify_lab.pipeline.notebook import main as notebook_main
from botify_lab.pipeline.notebook import run_notebook
from botify_lab.pipeline.outputs import atomic_output_dir
from botify_lab.pipeline.params import load_params
from botify_lab.stages.recommender import check_recommender
from botify_lab.stages.report import EXTERNAL_REFERENCE, build_index
from botify_lab.stages.report import main as report_main
from tests.conftest import REPO_ROOT, repo_params


def write_notebook(path, *sources):
    notebook = new_notebook(cells=[new_code_cell(source) for source in sources])
    notebook.cells[0].metadata["tags"] = ["parameters"]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_atomic_output_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target) as scratch:
            (scratch / "new.txt").write_text("half")
            raise RuntimeError("stage failed")
    assert [path.name for path in tmp_path.iterdir()] == ["out"]
    assert (target / "old.txt").read_text() == "old"
    with atomic_output_dir(target) as scratch:
        (scratch / "new.txt").write_text("whole")
    assert [path.name for path in target.iterdir()] == ["new.txt"]


def test_notebook_runner_publishes_only_a_fully_executed_notebook(tmp_path):
    source = write_notebook(tmp_path / "nb.ipynb", "fail = False", "assert not fail, 'asked to fail'\nprint('done')")
    output = tmp_path / "executed" / "nb.ipynb"
    assert run_notebook(source, output, {"fail": True}) != 0
    assert not output.exists()
    failed = tmp_path / "executed-failed" / "nb.ipynb"
    assert "asked to fail" in failed.read_text()
    assert run_notebook(source, output, {}) == 0
    assert "done" in output.read_text()
    assert not failed.exists()
    assert [path.name for path in output.parent.iterdir()] == ["nb.ipynb"]


def test_the_command_line_types_parameters_as_papermill_does_and_refuses_a_stray_argument(tmp_path, capsys):
    """dvc.yaml's commands pass `-p NAME VALUE`; the values are typed as papermill's own command line types them."""
    source = write_notebook(
        tmp_path / "nb.ipynb",
        "name, count, share, flag, nothing = '', 0, 0.0, False, 1",
        "print(repr((name, count, share, flag, nothing)))",
    )
    output = tmp_path / "executed" / "nb.ipynb"
    arguments = ["-p", "name", "ours", "-p", "count", "3", "-p", "share", "0.5", "-p", "flag", "True"]
    assert notebook_main([str(source), str(output), *arguments, "-p", "nothing", "None"]) == 0
    executed = nbformat.read(output, as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "('ours', 3, 0.5, True, None)\n"
    assert notebook_main([str(source), str(output), "-p", "name"]) == 2
    assert "expected -p NAME VALUE" in capsys.readouterr().err


def test_an_executed_notebook_is_the_same_file_on_every_run(tmp_path):
    """No clock readings, random ids or memory addresses are kept, so DVC records one hash for the same inputs."""
    source = write_notebook(
        tmp_path / "nb.ipynb",
        "value = 1",
        "import pandas as pd\npd.DataFrame({'a': [1, 2]}).style.highlight_max(color='lightgreen')",
        "import time\ntime.sleep(0.05)\nprint(value * 2)",
    )
    output = tmp_path / "executed" / "nb.ipynb"
    assert run_notebook(source, output, {"value": 21}) == 0
    first = output.read_bytes()
    assert run_notebook(source, output, {"value": 21}) == 0
    assert output.read_bytes() == first
    executed = nbformat.read(output, as_version=4)
    styled = executed.cells[2].outputs[0]["data"]
    assert '<table id="T_cell2_0"' in styled["text/html"] and "text/plain" not in styled
    assert executed.cells[-1].outputs[0]["text"] == "42\n"
    assert executed.cells[-1].metadata["papermill"]["status"] == "completed"
    assert "start_time" not in executed.metadata["papermill"]


def test_report_is_self_contained_with_an_index(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("ab_analysis", "train_x"):
        notebook = new_notebook(cells=[new_markdown_cell(f"# {name}"), new_code_cell("1 + 1")])
        nbformat.write(notebook, notebooks / f"{name}.ipynb")
    out = tmp_path / "html"
    report_main(
        [
            "--notebooks",
            str(notebooks),
            "--out",
            str(out),
            "--metrics",
            str(tmp_path / "no-metrics"),
            "--params",
            str(tmp_path / "no-params.yaml"),
        ]
    )
    pages = sorted(path.name for path in out.iterdir())
    assert pages == ["ab_analysis.html", "index.html", "train_x.html"]
    index = (out / "index.html").read_text()
    assert index.index("train_x.html") < index.index("ab_analysis.html")
    for page in pages:
        assert not EXTERNAL_REFERENCE.findall((out / page).read_text())


def test_index_is_the_studys_front_page(tmp_path):
    ab = {
        "experiment": "HOMEWORK",
        "alpha": 0.05,
        "arms": {"C": {"users": 10, "sessions": 12}},
        "effects": {
            "T1": {
                "mean_time_per_session": {
                    "control_mean": 2.0,
                    "treatment_mean": 2.1,
                    "effect": 6.1,
                    "lower": 2.0,
                    "upper": 10.2,
                    "significant": True,
                    "mde": 5.8,
                }
            }
        },
    }
    latency = {
        "effects": {
            "T1": {
                "mean_request_latency": {"effect": 9.0, "lower": 4.0, "upper": 14.0, "significant": True, "mde": 3.0}
            }
        }
    }
    params = load_params(REPO_ROOT / "params.yaml")  # the homework: contextual against ours (cosine, dimension 128)
    board = {
        "recommenders": {"C": "Random", "T1": "StickyArtist"},
        "arm_means": {"C": {"mean_time_per_session": 2.1}, "T1": {"mean_time_per_session": 3.1}},
        "effects": {
            "T1": {
                "mean_time_per_session": {"effect": 47.0, "lower": 30.0, "upper": 60.0, "significant": True, "mde": 9.0}
            }
        },
    }
    index = build_index(
        [("ab_analysis", "ab_analysis.html")], ab, params=params, latency=latency, leaderboard=board, figures=tmp_path
    )
    assert "+6.10%" in index and "[+2.00%, +10.20%]" in index and "5.80%" in index and ">significant<" in index
    assert "cosine similarity, dimension 128" in index and "StickyArtist" in index and "+47.00%" in index
    time_row = index[index.index("mean_time_per_session</td>") :]
    assert "#b7e1b0" in time_row[:300]  # a gain in time is green
    latency_row = index[index.index("mean_request_latency</td>") :]
    assert "#f4b6b6" in latency_row[:300]  # a rise in latency is red
    assert "mean_time_per_session</dt>" in index  # the metrics are defined


def test_front_page_says_whether_the_world_is_the_courses(tmp_path):
    """The fidelity summary (checks passed, the worst one, a figure, the page's link) stands on the front page."""
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(2, 2))
    figure.savefig(tmp_path / "fidelity_random.png")
    plt.close(figure)
    passed = {
        "passed": True,
        "failed": 0,
        "checks": 74,
        "worst": {"distance": 0.91, "check": "Random gamma=0.9 | hist 1.0"},
    }
    index = build_index([], {}, fidelity=passed, figures=tmp_path)
    section = index[index.index("The real logs</h2>") :]
    assert "all 74 checks within tolerance" in section
    assert "the closest to its limit: Random gamma=0.9 | hist 1.0 at 0.91" in section
    assert 'href="fidelity.html"' in section and "data:image/png;base64," in section
    failing = build_index([], {}, fidelity={**passed, "passed": False, "failed": 3}, figures=tmp_path)
    assert "3 of 74 checks OUTSIDE tolerance; the farthest: Random gamma=0.9 | hist 1.0 at 0.91" in failing
    assert "The real logs</h2>" not in build_index([], {}, figures=tmp_path)


def test_calibration_table_colours_only_the_calibrated_cells(tmp_path):
    calibration = {
        "calibrated": True,
        "seeds": [1, 2],
        "arms": {
            "C": {
                "mean_time_per_session": {
                    "published": 2.152,
                    "simulated": 2.14,
                    "ratio": 0.994,
                    "within_tolerance": True,
                },
                "mean_tracks_per_session": {
                    "published": 7.145,
                    "simulated": 7.9,
                    "ratio": 1.106,
                    "within_tolerance": False,
                },
                "time": {"published": 2.632, "simulated": 2.57, "ratio": 0.978, "within_tolerance": None},
            }
        },
    }
    params = load_params(REPO_ROOT / "params.yaml")
    tolerances = {"mean_time_per_session": 0.1, "mean_tracks_per_session": 0.05}
    params = params.model_copy(update={"calibrate": params.calibrate.model_copy(update={"tolerances": tolerances})})
    index = build_index([], {}, params=params, calibration=calibration, figures=tmp_path)
    rows = {
        metric: index[index.index(f"<td>{metric}</td>") :][:250]
        for metric in ("mean_time_per_session", "mean_tracks_per_session", "time")
    }
    assert "#b7e1b0" in rows["mean_time_per_session"] and "(±10% allowed)" in rows["mean_time_per_session"]
    assert "#f4b6b6" in rows["mean_tracks_per_session"]
    assert "#b7e1b0" not in rows["time"] and "#f4b6b6" not in rows["time"] and "(not a target)" in rows["time"]


def test_notebook_runner_embeds_figures_hides_progress_and_reports_the_error_briefly(tmp_path, capfd):
    source = write_notebook(
        tmp_path / "nb.ipynb",
        "fail = False",
        "import matplotlib.pyplot as plt\nfrom tqdm import tqdm\nfor _ in tqdm(range(3)):\n    pass\n"
        "plt.plot([1, 2], [3, 4])",
        "assert not fail, 'asked to fail'",
    )
    output = tmp_path / "executed" / "nb.ipynb"
    assert run_notebook(source, output, {}) == 0
    executed = nbformat.read(output, as_version=4)
    figure_cell = executed.cells[1]
    assert any("image/png" in item.get("data", {}) for item in figure_cell.outputs), "figure not embedded"
    assert not any(item.get("name") == "stderr" for item in figure_cell.outputs), "progress bar in the notebook"
    capfd.readouterr()
    assert run_notebook(source, output, {"fail": True}) != 0
    error = capfd.readouterr().err
    assert "AssertionError: asked to fail" in error and "click" not in error and len(error.splitlines()) < 25


def test_a_recommender_of_ones_own_is_checked_in_one_line_before_it_serves(tmp_path):
    """Stage recommender@<name>: the class imports and takes its params and data, or one line says why not."""
    student = tmp_path / "mine.py"
    student.write_text(
        "class Mine:\n"
        "    def __init__(self, top_tracks, k=5):\n"
        "        self.k = k\n\n"
        "    def recommend_next(self, user, prev_track, prev_track_time):\n"
        "        return prev_track\n"
    )

    def mine(**changes) -> dict:
        spec = {"label": "Mine", "file": str(student), "class": "Mine", "params": {"k": 3}}
        return repo_params({"recommenders": {"mine": {**spec, **changes}}})

    record = check_recommender("mine", mine(data={"top_tracks": "build/toppop/top_tracks.json"}))
    assert record["sha256"] == hashlib.sha256(student.read_bytes()).hexdigest()
    assert (record["class"], record["params"], record["label"]) == ("Mine", {"k": 3}, "Mine")
    with pytest.raises(ConfigError, match=r"^recommenders\.mine: .*mine\.py: Mine\(k\): missing a required argument"):
        check_recommender("mine", mine())
    with pytest.raises(ConfigError, match=r"^recommenders\.mine: .*mine\.py has no class 'Yours'$"):
        check_recommender("mine", mine(**{"class": "Yours"}))
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    with pytest.raises(ConfigError, match=r"cannot import .*broken\.py: ModuleNotFoundError"):
        check_recommender("mine", mine(file=str(broken)))
    with pytest.raises(ConfigError, match=r"no recommender file .*absent\.py$"):
        check_recommender("mine", mine(file=str(tmp_path / "absent.py")))


def test_the_pairs_stage_writes_the_rounds_pairs_once_for_every_model(tmp_path, monkeypatch):
    """build/pairs holds exactly the pairs of the rounds' logs the models train on (here the last two: window 2), as
    plain arrays: each round's own pairs (saved as the round ends), joined in the order the logs read as one give,
    the same users coming back every day. A missing folder says what to run; a round whose log leaves a session
    open cannot be joined to the next (that session would continue there)."""
    from botify_lab.pipeline import layout
    from botify_lab.research.logs import read_log, read_logs, training_pairs
    from botify_lab.stages import pairs as pairs_stage
    from tests.research.research_helpers import event, write_log

    monkeypatch.chdir(tmp_path)
    for number in range(4):  # the repository's rounds, round0 to round3: a day each, the same 30 users
        rows = []
        for user in range(30):
            times = [1.0, 0.25, 1.0, 0.0][: 2 + (user + number) % 3]
            for i, time in enumerate(times):
                last = i == len(times) - 1
                message, track, next_track = ("last" if last else "next"), (user * 7 + i + number) % 50, 3
                rows.append(
                    event(message, 10**6 * number + 1000 * user + i, user, track, time, recommendation=next_track)
                )
        write_log(layout.round_log(f"round{number}") / "data.json", rows[::-1])  # logged in another order
    params = repo_params({"collect": {"window": 2}})
    with pytest.raises(FileNotFoundError, match=r"dvc repro loop@round2"):
        pairs_stage.write_pairs(params)
    for number in range(4):
        name = f"round{number}"
        pairs_stage.save_round_pairs(read_log(layout.round_log(name)), layout.round_dir(name))
    with pytest.raises(FileNotFoundError, match="dvc repro pairs"):
        pairs_stage.read_pairs()
    pairs_stage.write_pairs(params)
    found = pairs_stage.read_pairs()
    expected = training_pairs(read_logs([layout.round_log("round2"), layout.round_log("round3")]))
    assert found.rounds == ["round2", "round3"] and found.events == 180 and len(found.pairs) == 120
    assert found.pairs.reset_index(drop=True).equals(expected.reset_index(drop=True))
    assert sorted(path.name for path in layout.PAIRS.iterdir()) == ["pairs.json", "pairs.npz"]
    every = pairs_stage.read_round_pairs(["round0", "round1", "round2", "round3"])
    assert every.pairs.equals(training_pairs(read_logs([layout.round_log(f"round{n}") for n in range(4)])))

    events = read_log(layout.round_log("round2"))
    pairs_stage.save_round_pairs(events[events["order"] != 0], layout.round_dir("round2"))  # a user's "last" lost
    with pytest.raises(ValueError, match="round2's log leaves 1 sessions open"):
        pairs_stage.read_round_pairs(["round2", "round3"])
    assert len(pairs_stage.read_round_pairs(["round2"]).pairs) == 59  # the last round read may end open
