"""The fidelity statistics: from hand-made logs rule by rule, and from the course's real logs as stats.json has them."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from botify_lab.formats import iter_json_lines
from botify_lab.research import fidelity as F
from botify_lab.research.catalog import read_catalog
from botify_lab.research.logs import read_log
from tests.conftest import SHARED_DIR, UPSTREAM_WORLD

from .research_helpers import event, write_log

REAL_LOGS = SHARED_DIR / "real-logs"


def _session(rows, user, start, plays, *, arm="C"):
    """Log rows of one session: plays = [(track, time), ...]; each next row recommends the following track."""
    for i, (track, time) in enumerate(plays):
        last = i == len(plays) - 1
        rows.append(
            event(
                "last" if last else "next",
                start + i,
                user,
                track,
                time,
                recommendation=None if last else plays[i + 1][0],
                experiments={"EXP": arm},
            )
        )


def test_statistics_of_a_hand_made_log(tmp_path):
    rows: list[dict] = []
    # user 1: first track 0 (artist 0), then 2 (artist 0, fresh: 0.9 = gamma ** 1, saturated), 2 again (repeat), 1
    _session(rows, 1, 1000, [(0, 1.0), (2, 0.9), (2, 0.0), (1, 0.35)])
    # user 2: two sessions; 4 (artist 0) at 0.5 after artist 0 played once: not saturated
    _session(rows, 2, 2000, [(3, 1.0), (4, 0.05), (5, 1.0)])
    _session(rows, 2, 3000, [(0, 1.0), (4, 0.5)])
    # another arm and an unclosed session are left out
    _session(rows, 3, 4000, [(0, 1.0), (1, 0.2)], arm="T1")
    rows.append(event("next", 5000, 1, 5, 1.0, recommendation=3, experiments={"EXP": "C"}))
    events = read_log(write_log(tmp_path / "log" / "data.json", rows))
    artist = np.array([0, 1, 0, 1, 0, 1])

    playbacks = F.playback_rows(events, "EXP", "C")
    assert playbacks.groupby("session").size().tolist() == [4, 3, 2]
    stats = F.statistics(playbacks, track_artist=artist, gamma=0.9)
    assert stats["sessions"] == 3 and stats["users"] == 2 and stats["recommended_rows"] == 6
    # user-level: user 1 one session (2.25 time, 4 tracks), user 2 two sessions (3.55 / 2 and 5 / 2)
    assert stats["mean_time_per_session_user_level"] == pytest.approx((2.25 + 3.55 / 2) / 2)
    assert stats["mean_tracks_per_session_user_level"] == pytest.approx((4 + 2.5) / 2)
    hist = stats["listen_time_hist"]
    assert hist["0"] == pytest.approx(1 / 6) and hist["(0,0.1]"] == pytest.approx(1 / 6)
    assert hist["(0.8,0.9]"] == pytest.approx(1 / 6) and hist["1.0"] == pytest.approx(1 / 6)
    assert hist["(0.3,0.4]"] == pytest.approx(1 / 6) and hist["(0.4,0.5]"] == pytest.approx(1 / 6)
    assert sum(hist.values()) == pytest.approx(1.0)
    assert stats["share_repeat"] == pytest.approx(1 / 6) and stats["share_time_zero_repeat"] == pytest.approx(1 / 6)
    # fresh tracks of an artist already played: 2 (0.9, saturated) and 4 in session 3 (0.5, not); 4 in session 2
    # follows artist 1 only (its artist 0 was not played), 5 follows artist 1's track 3.
    assert stats["saturation_rows"] == 3 and stats["saturation_share"] == pytest.approx(1 / 3)
    assert stats["mean_time_at_position"]["2"] == pytest.approx((0.9 + 0.05 + 0.5) / 3)
    assert stats["sessions_reaching_position"]["4"] == 1
    assert stats["session_length_quantiles"]["p50"] == 3.0 and stats["session_length_max"] == 4
    # first tracks 0, 3, 0: of the 6 ordered pairs of sessions, 2 start on the same track
    assert (stats["first_track_pairs"], stats["first_track_same_pairs"]) == (6, 2)
    assert "own_interest_starts" not in stats
    # user 1's interests hold its first track 0; user 2's hold 0 (its second session's) but not 3 (its first's),
    # though its interest 5 is by 3's artist; user 3 (the other arm) starts on its interest 0 and does not count
    interests = F.interest_pairs([1, 2, 3], [[9, 0, 0], [0, 5], [0]])
    assert len(interests) == 5  # a duplicated interest counts once
    stats = F.statistics(playbacks, track_artist=np.r_[artist, 1, 0, 0, 0], gamma=0.9, interests=interests)
    assert (stats["own_interest_starts"], stats["interest_artist_starts"]) == (2, 3)


def test_the_first_tracks_check_compares_the_effective_number_with_the_real_logs_range():
    real = F.real_first_tracks()
    low, high = real["range"]
    assert low < real["pooled"] < high
    inside = {"first_track_pairs": 1_000_000, "first_track_same_pairs": round(1_000_000 / real["pooled"])}
    check = F.first_tracks_check([inside, inside])
    assert check.passed and check.distance == 0.0
    hubby = {"first_track_pairs": 1_000_000, "first_track_same_pairs": 5_000}  # 200 effective first tracks
    check = F.first_tracks_check([hubby])
    assert not check.passed
    assert check.distance == pytest.approx((low - 200) / (F.FIRST_TRACKS_TOLERANCE * low))


def test_the_interest_starts_checks_compare_the_shares_of_sessions_with_the_real_logs_ranges():
    real = F.real_interest_starts()
    own, by_artist = real["own_interest_starts"], real["interest_artist_starts"]
    assert 0.07 < own["range"][0] < own["pooled"] < own["range"][1] < 0.1  # about 1 session in 11
    assert 0.5 < by_artist["range"][0] < by_artist["pooled"] < by_artist["range"][1] < 0.6  # over half
    inside = {"sessions": 10_000, **{key: round(10_000 * real[key]["pooled"]) for key in F.INTEREST_STARTS}}
    assert [check.distance for check in F.interest_starts_checks([inside, inside])] == [0.0, 0.0]
    hubby = {"sessions": 10_000, "own_interest_starts": 60, "interest_artist_starts": 700}  # the listening world
    checks = F.interest_starts_checks([hubby])
    assert not any(check.passed for check in checks)
    low = own["range"][0]
    assert checks[0].distance == pytest.approx((low - 0.006) / (F.FIRST_TRACKS_TOLERANCE * low))


def test_concurrent_sessions_of_one_user_are_kept_apart(tmp_path):
    rows: list[dict] = []
    _session(rows, 7, 1000, [(0, 1.0), (1, 0.1), (2, 0.2)])
    _session(rows, 7, 1000, [(3, 1.0), (4, 0.4), (5, 0.5)])  # the same timestamps: two processes at once
    rows.sort(key=lambda row: row["timestamp"])
    events = read_log(write_log(tmp_path / "data.json", rows))
    playbacks = F.playback_rows(events, "EXP", "C")
    assert sorted(playbacks.groupby("session")["track"].apply(list).tolist()) == [[0, 1, 2], [3, 4, 5]]


def test_checks_pass_and_fail_by_tolerance():
    check = F.Check("g", "mean_time_per_session", 2.0, [2.1, 2.2], 0.08, relative=True)
    assert check.mean == pytest.approx(2.15) and check.passed
    assert not F.Check("g", "hist 1.0", 0.03, [0.045], 0.01).passed
    real = {
        "mean_time_per_session_user_level": 2.0,
        "mean_tracks_per_session_user_level": 7.0,
        "listen_time_hist": {label: 1 / 12 for label, *_ in F.HIST_BINS},
        "mean_time_at_position": {str(p): 0.15 for p in range(1, 11)},
        "session_length_quantiles": {"p50": 6.0, "p90": 9.0},
    }
    table = F.checks_table(F.stats_checks("Random", real, [real, real]))
    assert table["passed"].all() and len(table) == 2 + 12 + 5 + 2


def test_a_range_check_passes_inside_and_within_its_tolerance_of_the_nearest_edge():
    def ratio(*values):
        return F.RangeCheck("g", "ratio", 2.41, list(values), 0.15, relative=True, real_range=(2.30, 2.61))

    assert ratio(2.35, 2.55).distance == 0.0
    assert ratio(2.30 * 0.86).passed and not ratio(2.30 * 0.84).passed
    assert ratio(2.61 * 1.14).passed and not ratio(2.61 * 1.16).passed
    assert ratio(1.26).distance == pytest.approx((2.30 - 1.26) / (0.15 * 2.30))


def test_the_course_contextual_checks_compare_ratio_and_shares_per_seed():
    hist = {label: 0.0 for label, *_ in F.HIST_BINS}
    real = {"listen_time_hist": {**hist, "0": 0.25, "1.0": 0.20}, "mean_listen_time_recommended": 0.44}
    random = [{"mean_time_per_session_user_level": 2.0}, {"mean_time_per_session_user_level": 2.2}]
    contextual = [
        {
            "mean_time_per_session_user_level": 5.0,
            "listen_time_hist": {**hist, "0": 0.3, "1.0": 0.1},
            "mean_listen_time_recommended": 0.40,
        },
        {
            "mean_time_per_session_user_level": 5.5,
            "listen_time_hist": {**hist, "0": 0.2, "1.0": 0.1},
            "mean_listen_time_recommended": 0.46,
        },
    ]
    checks = {c.statistic: c for c in F.course_contextual_checks("Contextual", real, random, contextual)}
    assert checks["time per session / Random"].simulated == [2.5, 2.5] and checks["time per session / Random"].passed
    assert checks["hist 0"].passed and checks["mean listen (recommended)"].passed
    assert not checks["hist 1.0"].passed and checks["hist 1.0"].distance == pytest.approx(2.0)


def test_the_training_checks_compare_variance_and_the_models_share_of_the_train_mean():
    def checks(variance, model_mse, train_mean_mse):
        found = F.course_training_checks(
            {"variance": variance}, {"model_mse": model_mse, "train_mean_mse": train_mean_mse}
        )
        return {check.statistic: check for check in found}

    course_like = checks(0.15, 0.111, 0.15)  # the student reruns: 0.145-0.154, model 0.110-0.113 (share 0.74)
    assert all(check.passed for check in course_like.values())
    assert course_like["listen-time variance"].real_range == (0.145, 0.154)
    assert course_like["model test MSE / train mean's"].real_range == (round(0.110 / 0.154, 4), round(0.113 / 0.145, 4))
    random_traffic = checks(0.089, 0.144, 0.089)  # a Random log: low variance, a model worse than the mean
    assert random_traffic["listen-time variance"].distance == pytest.approx((0.145 - 0.089) / 0.02)
    assert not random_traffic["model test MSE / train mean's"].passed
    assert checks(0.13, 0.111, 0.15)["listen-time variance"].passed  # within 0.02 of the range, absolute


def test_training_data_summary_matches_the_baselines():
    rng = np.random.default_rng(0)
    times = rng.uniform(0, 1, 20000)
    summary = F.training_data_summary(times)
    assert summary["variance"] == pytest.approx(1 / 12, abs=0.005)
    assert summary["train_mean_mse"] == pytest.approx(1 / 12, abs=0.01)
    assert summary["random_guess_mse"] == pytest.approx(1 / 6, abs=0.015)  # two independent uniforms


@pytest.fixture(scope="module")
def real_stats():
    path = REAL_LOGS / "stats.json"
    if not path.is_file() or not (UPSTREAM_WORLD / "tracks.json").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the course's logs are missing from {REAL_LOGS}")
        pytest.skip(f"the course's logs are not beside the repo ({REAL_LOGS})")
    return json.loads(path.read_text())


def test_the_committed_statistics_are_the_shared_ones(real_stats):
    """The pipeline reads a committed copy (a fresh clone has no shared folder); it must not drift from the source."""
    from botify_lab.inprocess.world_checks import COMMITTED_REAL_STATS

    committed = json.loads(COMMITTED_REAL_STATS.read_text())
    assert "course" in committed.pop("provenance")
    assert committed == real_stats


def test_the_first_tracks_of_the_real_logs_are_the_committed_figures(real_stats):
    """Every real log of at least 1,000 sessions, all arms (a session's first track does not depend on the arm),
    against the course's own users.json and tracks.json (every real log's)."""
    users = [row for _, row in iter_json_lines(UPSTREAM_WORLD / "users.json")]
    interests = F.interest_pairs([user["user"] for user in users], [user["interests"] for user in users])
    artist = pd.factorize(read_catalog(UPSTREAM_WORLD / "tracks.json")["artist"])[0]
    measured = {}
    for path in sorted(REAL_LOGS.glob("*.jsonl.gz")):
        rows = F.playback_rows(read_log(path))
        sessions = int((rows["position"] == 1).sum())
        if sessions >= F.FIRST_TRACKS_MIN_SESSIONS:
            starts = F.interest_starts(rows, interests, artist)
            measured[path.name.removesuffix(".jsonl.gz")] = (sessions, *F.first_track_pairs(rows), *starts)
    assert measured == F.REAL_FIRST_TRACKS


@pytest.mark.parametrize("kind", ["Random", "StickyArtist"])
def test_the_real_logs_give_stats_json(real_stats, kind):
    """The statistics of the pooled real arms land on stats.json (which was measured the same way)."""
    real = real_stats["types"][kind]["gamma=0.9"]
    artist = pd.factorize(read_catalog(UPSTREAM_WORLD / "tracks.json")["artist"])[0]
    parts = []
    for spec in real["arms"]:
        name, arm = spec.split(":")
        parts.append(F.log_arm_rows(read_log(REAL_LOGS / f"{name}.jsonl.gz"), arm, source=name))
    ours = F.pooled_statistics(parts, track_artist=artist, gamma=0.9)
    assert ours["users"] == real["users"] and ours["sessions"] == real["sessions"]
    assert ours["mean_time_per_session_user_level"] == pytest.approx(
        real["mean_time_per_session_user_level"], abs=0.005
    )
    assert ours["mean_tracks_per_session_user_level"] == pytest.approx(
        real["mean_tracks_per_session_user_level"], abs=0.01
    )
    for label, share in real["listen_time_hist"].items():
        assert ours["listen_time_hist"][label] == pytest.approx(share, abs=0.002)
    for position in ("2", "3", "4", "5", "6"):
        assert ours["mean_time_at_position"][position] == pytest.approx(
            real["mean_time_at_position"][position], abs=0.002
        )
    assert ours["session_length_quantiles"]["p50"] == real["session_length_quantiles"]["p50"]
    assert ours["session_length_quantiles"]["p90"] == real["session_length_quantiles"]["p90"]
    if kind == "StickyArtist":
        assert ours["saturation_share"] == pytest.approx(real["score_inversion"]["share_right_censored"], abs=0.002)
        assert ours["share_repeat"] == pytest.approx(real["share_repeat"], abs=0.002)
