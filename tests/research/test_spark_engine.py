"""The Spark engine gives the pandas engine's numbers: metrics/ab.json, latency.json, sessions, training pairs and
top tracks, on a generated pipeline-like log (rotated files, a gzipped one, equal timestamps across files, tiny
input splits packed several to a task) and on every course log in ../shared/real-logs.

One local[2] SparkSession for the module. Without Java or PySpark the Spark tests skip, except in CI (CI set),
where they fail: CI must run them.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from botify_lab.formats import log_files
from botify_lab.research import ab, logs
from botify_lab.research.logs import LogFormatError
from botify_lab.research.spark import engine, synthetic
from tests.conftest import REAL_LOG_FILES as LOG_FILES

# A JVM per session and a Spark job per check: the quick suite (`make test-quick`) leaves these to `make test`.
SPARK = pytest.mark.slow

RELATIVE = 1e-9


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the Spark tests")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def spark():
    try:
        import pyspark  # noqa: F401
    except ImportError:
        _missing("pyspark is not installed")
    from botify_lab.research.spark.session import LOG4J_CONFIG, java_available, spark_session

    if not java_available():
        _missing("no Java runtime for Spark")
    session = spark_session(
        "local[2]",
        app_name="botify-lab-tests",
        config={
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.sql.adaptive.enabled": "false",
            # Many second-long jobs on small logs: the JVM's quick compiler alone starts them sooner (about 10% of
            # the module's Spark time here); the plans and their generated code are the same.
            "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J_CONFIG} -XX:TieredStopAtLevel=1",
        },
    )
    yield session
    session.stop()


# ---------------------------------------------------------------------------------------------------------------
# Comparing


def assert_close(spark_value, pandas_value, where: str = "") -> None:
    """Equal documents: floats to 1e-9 relative (None = NaN), everything else exactly, keys in the same order."""
    if isinstance(pandas_value, dict):
        assert isinstance(spark_value, dict) and list(spark_value) == list(pandas_value), where
        for key in pandas_value:
            assert_close(spark_value[key], pandas_value[key], f"{where}/{key}")
    elif isinstance(pandas_value, list):
        assert isinstance(spark_value, list) and len(spark_value) == len(pandas_value), where
        for index, (left, right) in enumerate(zip(spark_value, pandas_value)):
            assert_close(left, right, f"{where}[{index}]")
    elif isinstance(pandas_value, float) and not isinstance(pandas_value, bool):
        assert isinstance(spark_value, float), (where, spark_value, pandas_value)
        if math.isnan(pandas_value):
            assert math.isnan(spark_value), where
        else:
            assert spark_value == pytest.approx(pandas_value, rel=RELATIVE, abs=1e-300), where
    else:
        assert type(spark_value) is type(pandas_value) and spark_value == pandas_value, (
            where,
            spark_value,
            pandas_value,
        )


def assert_frames_close(spark_frame: pd.DataFrame, pandas_frame: pd.DataFrame, relative: float = RELATIVE) -> None:
    assert list(spark_frame.columns) == list(pandas_frame.columns)
    assert len(spark_frame) == len(pandas_frame)
    for column in pandas_frame.columns:
        left, right = spark_frame[column].to_numpy(), pandas_frame[column].to_numpy()
        if pandas_frame[column].dtype.kind == "f":
            np.testing.assert_allclose(left.astype(float), right, rtol=relative, atol=0, equal_nan=True, err_msg=column)
        else:
            assert left.tolist() == right.tolist(), column


def pandas_reference(events: pd.DataFrame, experiment: str) -> tuple[dict, dict, pd.DataFrame]:
    """What the analyze stage writes today: ab.json and latency.json contents, and the effects table."""
    metrics = ab.user_metrics(logs.sessionize(events), experiment)
    effects = ab.ab_effects(metrics)
    srm = ab.srm_check(metrics["arm"].value_counts())
    return (
        ab.ab_metrics_json(effects, experiment=experiment, totals=ab.arm_totals(metrics), srm=srm),
        ab.latency_metrics_json(ab.arm_totals(metrics), ab.arm_statistics(metrics), effects),
        effects,
    )


def read_pandas(path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # negative latencies are expected in these logs
        return logs.read_log(path)


# ---------------------------------------------------------------------------------------------------------------
# The statistics from per-arm aggregates (no Spark needed)


@pytest.fixture(scope="module")
def synthetic_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic") / "log"
    synthetic.write_synthetic_log(folder, 20_000, seed=7, files=4, gzip_files=1, blank_line=True)
    return folder


@pytest.fixture(scope="module")
def synthetic_events(synthetic_log):
    return read_pandas(synthetic_log)


def test_effects_from_per_arm_statistics_equal_welch_on_the_users_rows(synthetic_events):
    """The one path every engine takes (count, mean, variance per arm) against scipy's Welch test on raw samples."""
    metrics = ab.user_metrics(logs.sessionize(synthetic_events), synthetic.EXPERIMENT)
    for power, alpha in ((0.8, 0.05), (0.9, 0.01)):
        effects = ab.ab_effects_from_statistics(ab.arm_statistics(metrics), alpha=alpha, power=power)
        assert len(effects) >= len(ab.METRICS) - 1  # every measured metric of every treatment
        for row in effects.itertuples(index=False):
            treatment = metrics.loc[metrics["arm"] == row.treatment, row.metric].to_numpy()
            control = metrics.loc[metrics["arm"] == "C", row.metric].to_numpy()
            raw = stats.ttest_ind(treatment, control, equal_var=False)
            interval = raw.confidence_interval(confidence_level=1 - alpha)
            assert row.p_value == pytest.approx(raw.pvalue, rel=1e-9, abs=1e-300)
            assert row.lower == pytest.approx(100 * interval.low / control.mean(), rel=1e-9)
            assert row.upper == pytest.approx(100 * interval.high / control.mean(), rel=1e-9)
            assert (row.control_n, row.treatment_n) == (len(control), len(treatment))


def test_effects_from_statistics_keep_the_small_sample_rules():
    metrics = pd.DataFrame(
        {
            "arm": ["C", "C", "T1"],
            "time": [1.0, 2.0, 3.0],
            "sessions": [1, 1, 1],
            "mean_request_latency": [1.0, 1.0, 1.0],
            "mean_tracks_per_session": [2.0, 2.0, 2.0],
            "mean_time_per_session": [1.0, 3.0, 2.0],
        }
    )
    effects = ab.ab_effects_from_statistics(ab.arm_statistics(metrics))
    assert effects["lower"].isna().all() and effects["p_value"].isna().all()  # one treatment user: no interval
    with pytest.raises(ValueError, match="no treatment arm"):
        ab.ab_effects_from_statistics(ab.arm_statistics(metrics[metrics["arm"] == "C"]))


# ---------------------------------------------------------------------------------------------------------------
# A generated pipeline-like log


@pytest.fixture(scope="module")
def spark_events(spark, synthetic_log):
    """Tiny input splits with no open cost: files split in several pieces and pieces of different files packed
    into one task, the case where a plain row id would not follow the log's order."""
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(200 * 1024))
    spark.conf.set("spark.sql.files.openCostInBytes", "1")
    try:
        events = engine.read_log(spark, synthetic_log).cache()
        assert events.rdd.getNumPartitions() > 4
        events.count()
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.unset("spark.sql.files.openCostInBytes")
    yield events
    events.unpersist()


@SPARK
def test_the_log_order_is_kept_across_rotated_files_and_splits(spark_events, synthetic_events):
    columns = ["message", "timestamp", "user", "track", "time", "latency"]
    ordered = engine.to_pandas(spark_events.orderBy(*engine.ORDER_COLUMNS).select(*columns))
    assert_frames_close(ordered, synthetic_events[columns], relative=0)
    assert engine.experiment_names(spark_events) == logs.experiment_names(synthetic_events)


@SPARK
def test_file_uris_list_a_folder_like_the_pandas_reader(spark, synthetic_log):
    local = [path.resolve().as_uri() for path in log_files(synthetic_log)]
    assert engine.log_file_uris(spark, synthetic_log) == local
    assert [
        uri.replace("file:/", "file:///", 1) if not uri.startswith("file:///") else uri
        for uri in engine.log_file_uris(spark, synthetic_log.resolve().as_uri())
    ] == local
    assert engine.order_log_names(["data.json", "data.json.10", "data.json.9.gz", "x", "data.json.1"]) == [
        "data.json.10",
        "data.json.9.gz",
        "data.json.1",
        "data.json",
    ]


@SPARK
def test_sessions_equal_on_a_generated_log(spark_events, synthetic_events):
    expected = logs.sessionize(synthetic_events, include_unclosed=True)
    assert expected.attrs["unclosed_sessions"] > 0
    got = engine.to_pandas(engine.sessionize(spark_events, include_unclosed=True).orderBy("user", "session"))
    assert_frames_close(got, expected)


@SPARK
def test_ab_json_equals_on_a_generated_log(spark_events, synthetic_events):
    ab_json, latency_json, effects = pandas_reference(synthetic_events, synthetic.EXPERIMENT)
    analysis = engine.analyze_events(spark_events, synthetic.EXPERIMENT, alpha=0.05)
    assert_frames_close(analysis.effects, effects)
    assert_close(analysis.ab_json(), ab_json)
    assert_close(analysis.latency_json(), latency_json)
    assert len(ab_json["effects"]) == 2 and ab_json["arms"]["C"]["users"] > 100


@SPARK
def test_training_pairs_and_top_tracks_equal_on_a_generated_log(spark_events, synthetic_events):
    expected = logs.training_pairs(synthetic_events)
    assert_frames_close(engine.to_pandas(engine.training_pairs(spark_events)), expected, relative=0)
    popularity = logs.track_popularity(synthetic_events)
    got = engine.to_pandas(engine.track_popularity(spark_events).orderBy("track"))
    assert got["track"].tolist() == popularity.index.tolist()
    assert got["popularity"].tolist() == popularity.tolist()  # bit for bit: the ties break the same way
    assert engine.top_tracks(spark_events) == logs.top_tracks(synthetic_events)
    assert engine.top_tracks(spark_events, 100) == logs.top_tracks(synthetic_events, 100)


@SPARK
def test_analyze_log_spark_reads_the_folder_itself(spark, synthetic_log, synthetic_events):
    ab_json, _, _ = pandas_reference(synthetic_events, synthetic.EXPERIMENT)
    analysis = engine.analyze_log_spark(
        synthetic_log,
        synthetic.EXPERIMENT,
        alpha=0.05,
        power=ab.DEFAULT_POWER,
        srm_alpha=ab.DEFAULT_SRM_ALPHA,
        spark=spark,
    )
    assert_close(analysis.ab_json(), ab_json)


@SPARK
def test_cuped_from_an_earlier_log_equals_the_pandas_engines(spark, synthetic_log, synthetic_events, tmp_path):
    """Another seed's log as the earlier one (the same users, other sessions): the same moments and CUPED table."""
    earlier_log = tmp_path / "earlier"
    synthetic.write_synthetic_log(earlier_log, 20_000, seed=8, files=2)
    metrics = ab.user_metrics(logs.sessionize(synthetic_events), synthetic.EXPERIMENT)
    earlier = ab.user_metrics(logs.sessionize(read_pandas(earlier_log)), synthetic.EXPERIMENT)
    expected = ab.covariate_moments(metrics, earlier)
    assert 0 < expected["covered"].sum() < expected["count"].sum()  # some users of the test are not in the other
    analysis = engine.analyze_log_spark(
        synthetic_log,
        synthetic.EXPERIMENT,
        alpha=0.05,
        spark=spark,
        covariate_log=earlier_log,
        covariate_experiment=synthetic.EXPERIMENT,
    )
    assert_frames_close(analysis.moments, expected)
    assert_close(ab.cuped_document(analysis.moments, covariate="x"), ab.cuped_document(expected, covariate="x"))


@SPARK
def test_a_malformed_log_is_refused(spark, tmp_path):
    good = (
        '{"message":"next","timestamp":1,"user":1,"track":2,"time":1.0,"latency":0.1,"recommendation":3,'
        '"experiments":{}}\n'
    )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "data.json").write_text(good + "{not json\n")
    with pytest.raises(LogFormatError):
        engine.read_log(spark, tmp_path / "broken")
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "data.json").write_text(good + good.replace('"next"', '"last"'))
    with pytest.raises(LogFormatError, match="recommendation"):
        engine.read_log(spark, tmp_path / "schema")


# ---------------------------------------------------------------------------------------------------------------
# The course's own logs


@SPARK
@pytest.mark.parametrize("path", LOG_FILES, ids=[path.name.split(".")[0] for path in LOG_FILES])
def test_every_course_log_gives_the_same_numbers(spark, real_logs_present, path):
    events = read_pandas(path)
    spark_events = engine.read_log(spark, path).cache()
    try:
        experiments = logs.experiment_names(events)
        assert engine.experiment_names(spark_events) == experiments
        compared = 0
        for experiment in experiments:
            try:
                ab_json, latency_json, _ = pandas_reference(events, experiment)
            except ValueError as problem:  # e.g. an experiment with one arm only: both engines refuse it
                with pytest.raises(ValueError, match=str(problem).split(" ")[0]):
                    engine.analyze_events(spark_events, experiment, alpha=0.05)
                continue
            analysis = engine.analyze_events(spark_events, experiment, alpha=0.05)
            assert_close(analysis.ab_json(), ab_json, experiment)
            assert_close(analysis.latency_json(), latency_json, experiment)
            compared += 1
        assert compared >= 1
        assert_frames_close(
            engine.to_pandas(engine.training_pairs(spark_events)), logs.training_pairs(events), relative=0
        )
        assert engine.top_tracks(spark_events) == logs.top_tracks(events)
    finally:
        spark_events.unpersist()


@SPARK
def test_the_cli_prints_the_same_table_on_either_engine(spark, real_logs_present, capsys):
    """`python -m botify_lab ab --engine spark` (reusing the running session) prints the pandas engine's table."""
    from botify_lab.__main__ import main

    path = next(path for path in LOG_FILES if path.name.startswith("aamamaev"))
    tables = {}
    for engine_name in ("pandas", "spark"):
        assert main(["ab", str(path), "--experiment", "RECOMMENDERS", "--engine", engine_name]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert printed[0].startswith("RECOMMENDERS: ") and "users per arm C 896, T1 916" in printed[0]
        tables[engine_name] = printed[1:]
    assert tables["spark"] == tables["pandas"]
    assert any(line.startswith("T1    mean_time_per_session") for line in tables["spark"])
