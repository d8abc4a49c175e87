"""The course's own event logs, as students committed them, read and analysed as they are.

They hold what our own logs never do (gzip, experiments the students added, other arm names), and the published
table of one of them is reproduced to the third decimal.
"""

from __future__ import annotations

import pytest

from botify_lab.research import ab
from botify_lab.research.logs import experiment_names, read_log, sessionize
from tests.conftest import REAL_LOG_FILES as LOG_FILES
from tests.conftest import REAL_LOGS

pytestmark = pytest.mark.usefixtures("real_logs_present")


@pytest.mark.parametrize("path", LOG_FILES, ids=[path.name.split(".")[0] for path in LOG_FILES])
def test_every_course_log_reads_and_sessionizes(path):
    events = read_log(path)
    assert len(events) > 900 and events["order"].is_monotonic_increasing
    sessions = sessionize(events)
    assert sessions["tracks"].sum() <= len(events) and (sessions["tracks"] >= 1).all()
    for experiment in experiment_names(events):
        metrics = ab.user_metrics(sessions, experiment)
        assert metrics["sessions"].sum() > 0


def test_the_published_table_of_a_course_log_is_reproduced():
    events = read_log(REAL_LOGS / "Panamec1__data1.jsonl.gz")
    metrics = ab.user_metrics(sessionize(events), "RECOMMENDERS")
    means = metrics.groupby("arm")["mean_time_per_session"].mean().round(3).to_dict()
    assert means == {"C": 2.046, "T1": 4.875, "T2": 2.347, "T3": 4.589}
    effects = ab.ab_effects(metrics).set_index(["treatment", "metric"])
    assert effects.loc[("T1", "mean_time_per_session"), "significant"]


def test_cuped_on_two_runs_of_one_students_experiment_warns_that_the_covariate_follows_the_arm(capsys):
    """Two of one student's runs of RECOMMENDERS: a user sits in the same arm in both (the same hash), so the earlier
    run's metric already holds the treatment. The CLI prints the course's table unchanged, then the CUPED table with
    the warning not to use it."""
    from botify_lab.__main__ import main

    log = REAL_LOGS / "Panamec1__data.jsonl.gz"
    assert main(["ab", str(log), "--experiment", "RECOMMENDERS"]) == 0
    plain = capsys.readouterr().out
    earlier = REAL_LOGS / "Panamec1__data3.jsonl.gz"
    assert main(["ab", str(log), "--experiment", "RECOMMENDERS", "--cuped", str(earlier)]) == 0
    output = capsys.readouterr().out
    assert output.startswith(plain.rstrip("\n"))  # the course's table first, as without --cuped
    assert "with CUPED" in output and "9.8% of the users are in the earlier log" in output
    assert "warning: the covariate differs between the arms" in output
