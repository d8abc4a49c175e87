"""Reading the rotated event log, sessionizing, training pairs and track popularity, as the course built them."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from botify_lab.formats import EVENT_KEYS, PROPENSITY_KEY, TypedEvent
from botify_lab.research import logs

from .research_helpers import event, write_log


def read_rows(tmp_path, rows):
    write_log(tmp_path / "log" / "data.json", rows)
    return logs.read_log(tmp_path / "log")


def test_read_log_orders_rotated_files_oldest_first(tmp_path):
    folder = tmp_path / "log"
    # data.json.10 is older than data.json.9: numeric, not lexical, order.
    for name, track in [
        ("data.json.10", 0),
        ("data.json.9", 1),
        ("data.json.2", 2),
        ("data.json.1", 3),
        ("data.json", 4),
    ]:
        write_log(folder / name, [event("next", 100, 1, track, 1.0), event("next", 100, 1, track + 10, 0.5)])
    (folder / "data.json.bak").write_text("not a log file\n")
    events = logs.read_log(folder)
    assert [path.name for path in logs.log_files(folder)] == [
        "data.json.10",
        "data.json.9",
        "data.json.2",
        "data.json.1",
        "data.json",
    ]
    assert events["track"].tolist() == [0, 10, 1, 11, 2, 12, 3, 13, 4, 14]
    assert events["order"].tolist() == list(range(10))
    assert events["recommendation"].dtype == "Int64"
    assert events["experiments"].iloc[0] == {"EXP": "C"}


def test_read_log_reads_rotated_files_without_a_current_file(tmp_path):
    write_log(tmp_path / "log" / "data.json.1", [event("last", 5, 2, 7, 0.25)])
    events = logs.read_log(tmp_path / "log")
    assert events[["message", "timestamp", "user", "track", "time"]].iloc[0].tolist() == ["last", 5, 2, 7, 0.25]
    assert pd.isna(events["recommendation"].iloc[0])


@pytest.mark.parametrize(
    ("bad_line", "complaint"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (orjson.dumps({k: v for k, v in event("next", 1, 1, 1, 1.0).items() if k != "latency"}), "missing ['latency']"),
        (orjson.dumps({**event("next", 1, 1, 1, 1.0), "extra": 1}), "unexpected ['extra']"),
        (orjson.dumps(event("skip", 1, 1, 1, 1.0)), "message must be"),
        (orjson.dumps(event("next", 1, "7", 1, 1.0)), "user must be an integer"),
        (orjson.dumps(event("next", 1, True, 1, 1.0)), "user must be an integer"),
        (orjson.dumps(event("next", 1, 1, 1, "fast")), "time must be a finite number"),
        (orjson.dumps(event("next", 1, 1, 1, float("nan"))), "time must be a finite number"),
        (orjson.dumps(event("next", 1, 1, 1, 1.0, latency=float("inf"))), "latency must be"),
        (orjson.dumps(event("next", 1, 1, 1, 1.0, recommendation=None)), "needs an integer recommendation"),
        (orjson.dumps({**event("last", 1, 1, 1, 1.0), "recommendation": 3}), "recommendation null"),
        (orjson.dumps(event("next", 1, 1, 1, 1.0, experiments={"EXP": 1})), "experiments must map"),
        (orjson.dumps({**event("last", 1, 1, 1, 1.0), "propensity": 0.5}), "unexpected ['propensity']"),
        (orjson.dumps({**event("next", 1, 1, 1, 1.0), "propensity": 0.0}), "propensity must be a number in (0, 1]"),
        (orjson.dumps({**event("next", 1, 1, 1, 1.0), "propensity": 1.5}), "propensity must be a number in (0, 1]"),
        (orjson.dumps({**event("next", 1, 1, 1, 1.0), "propensity": "1"}), "propensity must be a number in (0, 1]"),
    ],
)
def test_read_log_names_file_and_line_of_a_bad_row(tmp_path, bad_line, complaint):
    folder = tmp_path / "log"
    write_log(folder / "data.json.1", [event("next", 1, 1, 1, 1.0)])
    good = orjson.dumps(event("next", 2, 1, 2, 0.5))
    (folder / "data.json").write_bytes(good + b"\n\n" + bad_line + b"\n")
    with pytest.raises(logs.LogFormatError) as error:
        logs.read_log(folder)
    assert f"{folder / 'data.json'}:3:" in str(error.value)
    assert complaint in str(error.value)


def test_a_next_lines_propensity_is_read_and_older_lines_without_one_read_as_nan(tmp_path):
    """The additive field: the course's logs have none, the service's "next" lines carry it."""
    folder = tmp_path / "log"
    rows = [
        event("next", 1, 1, 1, 1.0),  # an older line
        {**event("next", 2, 1, 2, 0.5), "propensity": 0.25},
        event("last", 3, 1, 3, 0.5),
    ]
    events = logs.read_log(write_log(folder / "data.json", rows))
    assert events["propensity"].tolist()[1] == 0.25
    assert events["propensity"].isna().tolist() == [True, False, True]


def test_the_typed_reading_and_the_line_by_line_check_give_the_same_table(tmp_path):
    """A whole log is decoded into typed events in C; the line-by-line check, which names a bad line, is the
    fallback. Both must read any valid log alike: keys in another order, whole-number times, older lines."""
    assert TypedEvent.__struct_fields__ == (*EVENT_KEYS, PROPENSITY_KEY)
    reordered = dict(reversed(list(event("next", 4, 2, 5, 0.75, recommendation=9).items())))
    rows = [
        event("next", 1, 1, 1, 1.0, recommendation=7),
        {**event("next", 2, 1, 7, 0.5, experiments={"EXP": "T1", "OTHER": "C"}), "propensity": 0.25},
        reordered,
        {**event("last", 5, 2, 9, 1), "latency": 0},
        event("last", 6, 1, 3, 0.5),
    ]
    files = logs.event_log_files(write_log(tmp_path / "log" / "data.json", rows))
    typed = logs._typed_events_frame(files)
    assert typed is not None
    pd.testing.assert_frame_equal(typed, logs._checked_events_frame(files))
    assert typed["time"].tolist() == [1.0, 0.5, 0.75, 1.0, 0.5]


def test_the_courses_notebooks_read_a_log_with_propensities_as_before(tmp_path):
    """The course's notebooks load a log with pandas.read_json(lines=True) and use the schema's columns."""
    rows = [{**event("next", 1, 1, 1, 1.0, recommendation=4), "propensity": 0.5}, event("last", 2, 1, 4, 0.25)]
    course = pd.read_json(write_log(tmp_path / "log" / "data.json", rows), lines=True)
    ours = logs.read_log(tmp_path / "log")
    assert list(course.columns[:8]) == list(EVENT_KEYS)
    for column in ("timestamp", "user", "track", "time"):
        assert course[column].tolist() == ours[column].tolist()
    assert course["recommendation"].tolist()[0] == 4 and course["propensity"].tolist()[0] == 0.5


def test_read_log_skips_blank_lines_and_rejects_missing_folders(tmp_path):
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / "data.json").write_bytes(b"\n" + orjson.dumps(event("next", 1, 1, 1, 1.0)) + b"\n  \n")
    assert len(logs.read_log(folder)) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no data.json"):
        logs.read_log(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not found"):
        logs.read_log(tmp_path / "missing")


def test_sessionize_closes_on_last_and_sums_rows(tmp_path):
    rows = [
        event("next", 100, 1, 10, 1.0, latency=0.002),
        event("next", 101, 1, 11, 0.5, latency=0.001),
        event("last", 102, 1, 12, 0.25, latency=0.0005),
        event("next", 200, 1, 20, 1.0),
        event("last", 201, 1, 21, 0.0),
    ]
    sessions = logs.sessionize(read_rows(tmp_path, rows))
    assert sessions.columns.tolist() == ["user", "EXP", "session", "start", "tracks", "time", "latency", "closed"]
    assert sessions["tracks"].tolist() == [3, 2]
    assert sessions["time"].tolist() == pytest.approx([1.75, 1.0])
    assert sessions["latency"].tolist() == pytest.approx([3.5, 2.0])  # milliseconds
    assert sessions["start"].tolist() == [100, 200]
    assert sessions["session"].tolist() == [0, 1]


def test_sessionize_keeps_log_order_for_equal_timestamps(tmp_path):
    # A "last" and the next session's first row share a millisecond; so do rows within a session.
    rows = [
        event("next", 100, 1, 1, 1.0),
        event("next", 100, 1, 2, 0.5),
        event("last", 100, 1, 3, 0.5),
        event("next", 100, 1, 4, 1.0),
        event("last", 100, 1, 5, 0.75),
    ]
    sessions = logs.sessionize(read_rows(tmp_path, rows))
    assert sessions["tracks"].tolist() == [3, 2]
    assert sessions["time"].tolist() == pytest.approx([2.0, 1.75])


def test_sessionize_sorts_interleaved_users_by_time(tmp_path):
    # Two users interleaved; user 2's rows arrive out of timestamp order (two workers writing).
    rows = [
        event("next", 100, 2, 1, 1.0),
        event("next", 100, 1, 7, 1.0),
        event("last", 300, 2, 3, 0.5),
        event("next", 200, 2, 2, 0.25),
        event("last", 150, 1, 8, 0.5),
    ]
    sessions = logs.sessionize(read_rows(tmp_path, rows))
    assert sessions[["user", "tracks", "start"]].values.tolist() == [[1, 2, 100], [2, 3, 100]]
    assert sessions["time"].tolist() == pytest.approx([1.5, 1.75])


def test_a_session_may_span_a_rotation(tmp_path):
    folder = tmp_path / "log"
    write_log(folder / "data.json.2", [event("next", 1, 1, 1, 1.0), event("next", 2, 1, 2, 0.5)])
    write_log(folder / "data.json.1", [event("next", 3, 1, 3, 0.5), event("next", 3, 2, 8, 1.0)])
    write_log(folder / "data.json", [event("last", 4, 1, 4, 0.25), event("last", 5, 2, 9, 0.5)])
    events = logs.read_log(folder)
    sessions = logs.sessionize(events)
    assert sessions[["user", "tracks", "start"]].values.tolist() == [[1, 4, 1], [2, 2, 3]]
    assert sessions["time"].tolist() == pytest.approx([2.25, 1.5])
    assert logs.training_pairs(events)[["context", "track"]].values.tolist() == [[1, 2], [1, 3], [1, 4], [8, 9]]


def test_sessionize_drops_or_keeps_a_trailing_unclosed_session(tmp_path):
    rows = [
        event("next", 1, 1, 1, 1.0),
        event("last", 2, 1, 2, 0.5),
        event("next", 3, 1, 3, 1.0),
        event("next", 4, 1, 4, 0.5),
        event("next", 5, 2, 9, 1.0),
    ]
    events = read_rows(tmp_path, rows)
    dropped = logs.sessionize(events)
    assert dropped[["user", "tracks"]].values.tolist() == [[1, 2]]
    assert dropped.attrs["unclosed_sessions"] == 2
    kept = logs.sessionize(events, include_unclosed=True)
    assert kept[["user", "tracks", "closed"]].values.tolist() == [[1, 2, True], [1, 2, False], [2, 1, False]]


def test_sessionize_gives_one_arm_column_per_experiment(tmp_path):
    both = {"A": "T1", "B": "C"}
    rows = [
        event("next", 1, 1, 1, 1.0, experiments={"A": "C"}),
        event("last", 2, 1, 2, 0.5, experiments={"A": "C"}),
        event("next", 3, 2, 1, 1.0, experiments=both),
        event("last", 4, 2, 2, 0.5, experiments=both),
    ]
    sessions = logs.sessionize(read_rows(tmp_path, rows))
    assert sessions["A"].tolist() == ["C", "T1"]
    assert pd.isna(sessions["B"].iloc[0]) and sessions["B"].iloc[1] == "C"
    assert logs.experiment_names(read_rows(tmp_path, rows)) == ["A", "B"]


def test_sessionize_refuses_experiment_named_like_a_session_column(tmp_path):
    rows = [
        event("next", 1, 1, 1, 1.0, experiments={"time": "C"}),
        event("last", 2, 1, 2, 0.5, experiments={"time": "C"}),
    ]
    with pytest.raises(ValueError, match="clash"):
        logs.sessionize(read_rows(tmp_path, rows))


def test_sessionize_of_an_empty_log_is_empty(tmp_path):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "data.json").write_bytes(b"")
    events = logs.read_log(tmp_path / "log")
    assert len(events) == 0
    assert len(logs.sessionize(events)) == 0
    assert len(logs.training_pairs(events)) == 0


def test_training_pairs_use_the_sessions_first_track_as_context(tmp_path):
    rows = [
        event("next", 1, 1, 5, 1.0, recommendation=7),
        event("next", 2, 1, 7, 0.5, recommendation=9),
        event("last", 3, 1, 9, 0.3),
        event("next", 4, 2, 40, 1.0, recommendation=41),  # another user in between
        event("next", 5, 1, 6, 1.0, recommendation=8),
        event("last", 5, 1, 8, 0.9),  # same millisecond as the row before: log order decides
        event("last", 6, 2, 41, 0.1),
    ]
    pairs = logs.training_pairs(read_rows(tmp_path, rows))
    assert pairs[["user", "context", "track"]].values.tolist() == [[1, 5, 7], [1, 5, 9], [1, 6, 8], [2, 40, 41]]
    assert pairs["time"].tolist() == pytest.approx([0.5, 0.3, 0.9, 0.1])


def test_popularity_sums_listen_time_and_ranks_ties_by_id(tmp_path):
    rows = [
        event("next", 1, 1, 3, 1.0),
        event("next", 2, 1, 1, 0.5),
        event("last", 3, 1, 2, 0.5),
        event("next", 4, 2, 1, 0.5),
        event("last", 5, 2, 4, 0.0),
    ]
    events = read_rows(tmp_path, rows)
    popularity = logs.track_popularity(events)
    assert popularity.to_dict() == pytest.approx({1: 1.0, 2: 0.5, 3: 1.0, 4: 0.0})
    assert logs.top_tracks(events) == [1, 3, 2, 4]
    assert logs.top_tracks(events, n=2) == [1, 3]
    assert all(type(track) is int for track in logs.top_tracks(events))


def test_negative_latencies_are_kept_with_a_warning_that_counts_them(tmp_path):
    """Students' committed course logs hold a few (a clock adjustment while serving, e.g. -0.0062 s)."""
    rows = [
        event("next", 1, 1, 1, 1.0, latency=-0.0062),
        event("last", 2, 1, 2, 0.5, latency=-0.001),
        event("next", 3, 2, 3, 1.0),
    ]
    with pytest.warns(UserWarning, match="2 events with a negative latency"):
        events = read_rows(tmp_path, rows)
    assert events["latency"].tolist() == [-0.0062, -0.001, 0.001]


def test_the_cli_reports_a_warning_in_one_plain_line(tmp_path, capsys):
    """What, which file, how many; not Python's `file:line: UserWarning` and source echo, which reads like a crash."""
    from botify_lab.__main__ import main

    rows = [
        event("next", 1, 1, 1, 1.0, latency=-0.0062),
        event("last", 2, 1, 2, 0.5, latency=-0.001),
        event("next", 3, 2, 3, 1.0, experiments={"EXP": "T1"}),
        event("last", 4, 2, 4, 0.5, experiments={"EXP": "T1"}),
    ]
    write_log(tmp_path / "log" / "data.json", rows)
    assert main(["ab", str(tmp_path / "log"), "--experiment", "EXP"]) == 0
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"warning: {tmp_path / 'log'}: 2 events with a negative latency")
    assert "UserWarning" not in errors[0] and ".py:" not in errors[0]


def test_a_gzipped_log_file_is_read_directly(tmp_path):
    import gzip

    path = tmp_path / "course.jsonl.gz"
    path.write_bytes(
        gzip.compress(
            b"".join(orjson.dumps(row) + b"\n" for row in [event("next", 1, 1, 1, 1.0), event("last", 2, 1, 2, 0.5)])
        )
    )
    assert logs.read_log(path)["message"].tolist() == ["next", "last"]


def test_top_tracks_do_not_depend_on_the_order_of_the_log(tmp_path):
    """Two processes interleave a log differently on every run; equal totals must tie whatever the float sums say.

    0.1 + 0.2 + 0.3 and 0.3 + 0.2 + 0.1 differ in the last bit, so without care the two tracks below would swap
    places when the log's order does."""
    rows = [
        event("next", 1, 1, 7, 0.1),
        event("next", 2, 1, 3, 0.3),
        event("next", 3, 1, 7, 0.2),
        event("next", 4, 1, 3, 0.2),
        event("next", 5, 1, 7, 0.3),
        event("next", 6, 1, 3, 0.1),
    ]
    assert logs.top_tracks(pd.DataFrame(rows)) == [3, 7]  # a tie: the smaller id first
    assert logs.top_tracks(pd.DataFrame(rows[::-1])) == [3, 7]
