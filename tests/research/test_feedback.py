"""The feedback loop's numbers (research/feedback.py) on hand-made logs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from botify_lab.research.feedback import gini, served_summary
from botify_lab.research.logs import read_log, read_logs
from tests.research.research_helpers import event, write_log


def test_gini_of_equal_and_concentrated_counts():
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 12])) == pytest.approx(0.75)  # (n - 1) / n: one item takes everything
    assert gini(np.array([1, 3])) == pytest.approx(0.25)
    assert gini(np.zeros(3)) == 0.0


def two_arm_log(path):
    """User 1 (arm C) hears tracks of artist a then b; user 2 (arm T1) stays with artist a twice."""
    rows = [
        event("next", 1, 1, 0, 1.0, recommendation=1, experiments={"E": "C"}),  # 0 (a) -> 1 (a)
        event("next", 2, 1, 1, 0.5, recommendation=2, experiments={"E": "C"}),  # 1 (a) -> 2 (b)
        event("last", 3, 1, 2, 0.25, experiments={"E": "C"}),
        event("next", 1, 2, 0, 1.0, recommendation=1, experiments={"E": "T1"}),  # 0 (a) -> 1 (a)
        event("next", 2, 2, 1, 1.0, recommendation=0, experiments={"E": "T1"}),  # 1 (a) -> 0 (a)
        event("last", 3, 2, 0, 1.0, experiments={"E": "T1"}),
    ]
    return write_log(path / "log" / "data.json", rows).parent


def test_served_summary_per_arm_and_overall(tmp_path):
    artist = np.array(["a", "a", "b", "c"], dtype=object)
    summary = served_summary(read_log(two_arm_log(tmp_path)), artist, "E")
    control, treatment, overall = summary["arms"]["C"], summary["arms"]["T1"], summary["all"]
    assert control["sessions"] == 1 and control["mean_time_per_session"] == pytest.approx(1.75)
    assert control["mean_tracks_per_session"] == 3 and control["served"] == 2
    assert control["coverage_share"] == pytest.approx(0.5)  # tracks 1 and 2 of 4
    assert control["same_artist_share"] == pytest.approx(0.5)
    assert control["gini"] == pytest.approx(gini(np.array([0, 1, 1, 0])))
    assert treatment["same_artist_share"] == 1.0 and treatment["mean_time_per_session"] == pytest.approx(3.0)
    assert overall["sessions"] == 2 and overall["served"] == 4 and overall["coverage_share"] == pytest.approx(0.75)


def test_read_logs_puts_rounds_one_after_another(tmp_path):
    first = two_arm_log(tmp_path / "round0")
    second = write_log(
        tmp_path / "round1" / "log" / "data.json",
        [event("next", 10, 1, 2, 1.0, recommendation=3), event("last", 11, 1, 3, 0.5)],
    ).parent
    events = read_logs([first, second])
    assert len(events) == 8 and list(events["order"]) == list(range(8))
    assert list(events["timestamp"].iloc[-2:]) == [10, 11]
    with pytest.raises(ValueError, match="at least one"):
        read_logs([])
