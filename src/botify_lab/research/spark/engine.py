"""The event log as Spark DataFrame jobs: the same tables as `research.logs` and `research.ab`, past one machine.

Every function mirrors its pandas twin (same columns, same rules, same tie-breaks); the tests hold the two engines
to the same numbers on generated logs and on the course's own logs.

The log's own order. pandas numbers the lines of the files in writing order (`data.json.K` oldest ... `data.json`),
and equal timestamps keep that order. Here every row carries three order columns: `_file` (the file's rank in
writing order), `_block` (the byte offset of the input split the row was read from) and `_row` (Spark's
monotonically increasing id, which grows with the row's position inside one task). A split is read by exactly one
task, front to back, and a line belongs to the split it starts in, so (_file, _block, _row) sorts exactly like the
line number, however Spark packs files and splits into tasks. (The id alone, or with the file name, is not enough:
Spark may pack several splits of a file into one task in any order.)

Reading: `read_log` takes a local folder or file, or any URI Spark's Hadoop layer reads (`hdfs://`, `s3a://`, with
the connector on the classpath); the folder's files are listed and ranked by the same naming rule as
`botify_lab.formats.log_files`. Lines are parsed with an explicit schema in FAILFAST mode, and a validation pass
rejects rows that break the event schema (what a schema can see: missing or null fields, unknown message,
recommendation present on "last" or missing on "next", non-finite numbers), so nothing is dropped silently.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from botify_lab.formats import LOG_FILE_NAME, MESSAGES
from botify_lab.research import ab
from botify_lab.research.logs import SESSION_FIELDS, LogFormatError, event_log_files

ORDER_COLUMNS = ("_file", "_block", "_row")
TIME_ORDER = ("timestamp", *ORDER_COLUMNS)
_ROTATED_LOG = re.compile(re.escape(LOG_FILE_NAME) + r"\.(\d+)")
POPULARITY_DECIMALS = 6  # as `logs.track_popularity` rounds
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def event_schema():
    """The event log's schema (botify_lab.formats.EVENT_KEYS, then PROPENSITY_KEY) as a Spark struct."""
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField("message", T.StringType()),
            T.StructField("timestamp", T.LongType()),
            T.StructField("user", T.LongType()),
            T.StructField("track", T.LongType()),
            T.StructField("time", T.DoubleType()),
            T.StructField("latency", T.DoubleType()),
            T.StructField("recommendation", T.LongType()),
            T.StructField("experiments", T.MapType(T.StringType(), T.StringType())),
            T.StructField("propensity", T.DoubleType()),  # additive: null on "last" lines and in older logs
        ]
    )


# ---------------------------------------------------------------------------------------------------------------
# Files


def order_log_names(names: list[str]) -> list[str]:
    """File names of a log folder in writing order, by the rule of `botify_lab.formats.log_files`."""
    rotated, current = [], []
    for name in names:
        plain = name[:-3] if name.endswith(".gz") else name
        match = _ROTATED_LOG.fullmatch(plain)
        if match:
            rotated.append((int(match.group(1)), name))
        elif plain == LOG_FILE_NAME:
            current.append(name)
    return [name for _, name in sorted(rotated, key=lambda item: -item[0])] + sorted(current)


def log_file_uris(spark, log_path) -> list[str]:
    """The log's files in writing order: a local folder or file, or a URI (hdfs://, s3a://, file://) of either."""
    text = str(log_path)
    if not _SCHEME.match(text):
        return [path.resolve().as_uri() for path in event_log_files(Path(text))]
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(text)
    filesystem = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not filesystem.exists(path):
        raise FileNotFoundError(f"event-log folder not found: {text}")
    if filesystem.getFileStatus(path).isFile():
        return [filesystem.makeQualified(path).toString()]
    files = {
        status.getPath().getName(): status.getPath().toString()
        for status in filesystem.listStatus(path)
        if status.isFile()
    }
    names = order_log_names(list(files))
    if not names:
        raise FileNotFoundError(f"no {LOG_FILE_NAME} or {LOG_FILE_NAME}.N files in {text}")
    return [files[name] for name in names]


# ---------------------------------------------------------------------------------------------------------------
# Events


def read_log(spark, log_path, *, validate: bool = True):
    """All events of a log as a DataFrame: the event columns plus the order columns `_file`, `_block`, `_row`.

    `log_path` is a folder, a file or a URI, or a list of them read one after the other (e.g. the logs of the
    simulator's shards: each holds whole users, so how the shards are ordered changes no session).

    Sorting by ORDER_COLUMNS gives the log's own order (the pandas `order` column). With `validate`, one pass
    checks every row against the event schema and raises LogFormatError naming the file and a bad row.
    """
    from pyspark.sql import functions as F

    paths = list(log_path) if isinstance(log_path, (list, tuple)) else [log_path]
    uris = [uri for path in paths for uri in log_file_uris(spark, path)]
    frames = []
    for rank, uri in enumerate(uris):
        frame = (
            spark.read.schema(event_schema())
            .option("mode", "FAILFAST")
            .option("allowNonNumericNumbers", "false")
            .json(uri)
        )
        frames.append(
            frame.select(
                *frame.columns,
                F.lit(rank).cast("int").alias("_file"),
                F.col("_metadata.file_block_start").alias("_block"),
                F.monotonically_increasing_id().alias("_row"),
            )
        )
    events = frames[0]
    for frame in frames[1:]:
        events = events.unionByName(frame)
    if validate:
        _validate(events, uris)
    return events


def _problems(events):
    from pyspark.sql import functions as F

    finite = lambda name: F.col(name).isNotNull() & ~F.isnan(name) & (F.abs(F.col(name)) != float("inf"))  # noqa: E731
    good = (
        F.col("message").isin(*MESSAGES)
        & F.col("timestamp").isNotNull()
        & F.col("user").isNotNull()
        & F.col("track").isNotNull()
        & finite("time")
        & finite("latency")
        & F.col("experiments").isNotNull()
        & F.when(F.col("message") == "next", F.col("recommendation").isNotNull()).otherwise(
            F.col("recommendation").isNull()
        )
    )
    return events.where(~F.coalesce(good, F.lit(False)))


def _validate(events, uris: list[str]) -> None:
    try:
        problems = _problems(events)
        bad = problems.limit(1).collect() if problems.count() else []  # one pass over a good log
    except Exception as problem:  # a line that is not JSON or a value of the wrong type (FAILFAST)
        if "MALFORMED_RECORD" not in str(problem):
            raise
        raise LogFormatError(
            f"{', '.join(uris)}: a line is not a JSON event of the schema ({str(problem).splitlines()[0]})"
        ) from None
    if bad:
        row = bad[0].asDict()
        file = uris[row.pop("_file")]
        raise LogFormatError(
            f"{file}: a row breaks the event schema (missing or null field, unknown message, "
            f"recommendation vs message, or a non-finite number): {row}"
        )


def experiment_names(events) -> list[str]:
    """Every experiment named in the log, in order of first appearance (as `research.logs.experiment_names`)."""
    from pyspark.sql import functions as F

    names = (
        events.select(*ORDER_COLUMNS, F.posexplode(F.map_keys("experiments")).alias("position", "name"))
        .groupBy("name")
        .agg(F.min(F.struct(*ORDER_COLUMNS, "position")).alias("first"))
        .orderBy("first")
        .collect()
    )
    return [row["name"] for row in names]


# ---------------------------------------------------------------------------------------------------------------
# Sessions


def _user_window():
    from pyspark.sql import Window

    return Window.partitionBy("user").orderBy(*TIME_ORDER)


def with_sessions(events):
    """Events with `start` (the row opens a session) and `session` (0-based index within the user): per user in
    time order, equal timestamps in the log's order, a "last" row closes the session (as `logs.sessionize`)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    window = _user_window()
    running = window.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    is_last = F.col("message") == "last"
    return (
        events.withColumn("_is_last", is_last)
        .withColumn("start", F.coalesce(F.lag("_is_last").over(window), F.lit(True)))
        .withColumn("session", F.sum(F.col("start").cast("long")).over(running) - 1)
    )


def sessionize(events, *, experiments: list[str] | None = None, include_unclosed: bool = False):
    """The course's sessions, one row each: user, one arm column per experiment (from the session's first row),
    session, start, tracks, time, latency (ms), closed; unclosed trailing sessions dropped unless asked for.

    `experiments` defaults to every experiment in the log (one extra job to find them).
    """
    from pyspark.sql import functions as F

    if experiments is None:
        experiments = experiment_names(events)
    clash = sorted(set(experiments) & set(SESSION_FIELDS))
    if clash:
        raise ValueError(f"experiment names {clash} clash with session columns {SESSION_FIELDS}")
    rows = with_sessions(events)
    arms = [F.max(F.when(F.col("start"), F.col("experiments")[name])).alias(name) for name in experiments]
    sessions = rows.groupBy("user", "session").agg(
        *arms,
        F.min("timestamp").alias("start"),
        F.count(F.lit(1)).alias("tracks"),
        F.sum("time").alias("time"),
        F.sum(F.col("latency") * 1000.0).alias("latency"),
        F.max("_is_last").alias("closed"),
    )
    if not include_unclosed:
        sessions = sessions.where(F.col("closed"))
    return sessions.select("user", *experiments, *SESSION_FIELDS[1:])


def user_metrics(sessions, experiment: str):
    """One row per (user, arm) as `research.ab.user_metrics` (sessions logged without the experiment left out)."""
    from pyspark.sql import functions as F

    if experiment not in sessions.columns:
        raise KeyError(f"sessions have no arm column for experiment {experiment!r}")
    metrics = (
        sessions.where(F.col(experiment).isNotNull())
        .groupBy("user", F.col(experiment).alias("arm"))
        .agg(
            F.count(F.lit(1)).alias("sessions"),
            F.sum("time").alias("time"),
            F.sum("tracks").alias("tracks"),
            F.sum("latency").alias("latency"),
        )
    )
    return metrics.select(
        "user",
        "arm",
        "sessions",
        "time",
        "tracks",
        "latency",
        (F.col("latency") / F.col("tracks")).alias("mean_request_latency"),
        (F.col("tracks") / F.col("sessions")).alias("mean_tracks_per_session"),
        (F.col("time") / F.col("sessions")).alias("mean_time_per_session"),
    )


@dataclass
class ArmAggregates:
    """What comes back to the driver: per arm and metric (count, mean, variance ddof 1), and per arm the users and
    the sums of sessions, tracks and latency (`ab.arm_statistics` and `ab.arm_totals` shapes)."""

    statistics: pd.DataFrame
    totals: pd.DataFrame


def arm_aggregates(metrics, metric_names=ab.METRICS, control: str = "C") -> ArmAggregates:
    """Per-arm count, mean and variance of each user-level metric, computed in Spark (one small row per arm)."""
    from pyspark.sql import functions as F

    columns = [
        F.count(F.lit(1)).alias("users"),
        F.sum("sessions").alias("sessions"),
        F.sum("tracks").alias("tracks"),
        F.sum("latency").alias("latency"),
    ]
    for index, metric in enumerate(metric_names):
        columns += [F.avg(metric).alias(f"mean_{index}"), F.var_samp(metric).alias(f"variance_{index}")]
    rows = {row["arm"]: row for row in metrics.groupBy("arm").agg(*columns).collect()}
    statistics, totals = [], []
    for arm in ab.arm_order(rows, control):
        row = rows[arm]
        totals.append(
            {
                "arm": arm,
                "users": int(row["users"]),
                "sessions": int(row["sessions"]),
                "tracks": int(row["tracks"]),
                "latency": float(row["latency"]),
            }
        )
        for index, metric in enumerate(metric_names):
            variance = row[f"variance_{index}"]
            statistics.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "count": int(row["users"]),
                    "mean": float(row[f"mean_{index}"]),
                    "variance": math.nan if variance is None else float(variance),
                }
            )
    return ArmAggregates(
        pd.DataFrame(statistics, columns=list(ab.STATISTICS_COLUMNS)),
        pd.DataFrame(totals, columns=list(ab.TOTALS_COLUMNS)),
    )


def covariate_moments(metrics, covariates, metric_names=ab.CUPED_METRICS, control: str = "C") -> pd.DataFrame:
    """`ab.covariate_moments` in Spark: the test's user metrics joined with each user's earlier ones (a user without
    one takes their mean over the test's users), reduced to a few moments per arm and metric on the driver."""
    from pyspark.sql import functions as F

    before = covariates.select("user", *[F.col(m).alias(m + ab.COVARIATE_SUFFIX) for m in metric_names])
    joined = metrics.select("user", "arm", *metric_names).join(before, on="user", how="left")
    means = joined.agg(*[F.avg(m + ab.COVARIATE_SUFFIX).alias(m) for m in metric_names]).collect()[0]
    columns = [F.count(F.lit(1)).alias("count")]
    for index, metric in enumerate(metric_names):
        known = F.col(metric + ab.COVARIATE_SUFFIX)
        covariate = F.coalesce(known, F.lit(means[metric]))
        columns += [
            F.avg(metric).alias(f"mean_{index}"),
            F.var_samp(metric).alias(f"variance_{index}"),
            F.avg(covariate).alias(f"covariate_mean_{index}"),
            F.var_samp(covariate).alias(f"covariate_variance_{index}"),
            F.covar_samp(covariate, F.col(metric)).alias(f"covariance_{index}"),
            F.count(known).alias(f"covered_{index}"),
        ]
    rows = {row["arm"]: row for row in joined.groupBy("arm").agg(*columns).collect()}
    moments = []
    for index, metric in enumerate(metric_names):
        for arm in ab.arm_order(rows, control):
            row = rows[arm]
            moments.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "count": int(row["count"]),
                    **{
                        name: math.nan if row[f"{name}_{index}"] is None else float(row[f"{name}_{index}"])
                        for name in ("mean", "variance", "covariate_mean", "covariate_variance", "covariance")
                    },
                    "covered": int(row[f"covered_{index}"]),
                }
            )
    return pd.DataFrame(moments, columns=list(ab.MOMENT_COLUMNS))


# ---------------------------------------------------------------------------------------------------------------
# Training pairs and popularity


def training_pairs(events, *, ordered: bool = True):
    """The contextual model's examples as `logs.training_pairs`: (user, context = session's first track, track,
    time) for every row after a session's first, sorted per user in time order (`ordered=False` skips the sort)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    running = _user_window().rowsBetween(Window.unboundedPreceding, Window.currentRow)
    rows = with_sessions(events).withColumn(
        "context", F.last(F.when(F.col("start"), F.col("track")), ignorenulls=True).over(running)
    )
    pairs = rows.where(~F.col("start"))
    if ordered:
        pairs = pairs.orderBy("user", *TIME_ORDER)
    return pairs.select("user", "context", "track", "time")


def track_popularity(events):
    """TopPop's popularity per track (track, popularity), bit for bit as `logs.track_popularity` computes it.

    pandas sums a group with Kahan compensation in the frame's (log) order, then rounds to POPULARITY_DECIMALS
    (numpy: rint(x * 10**d) / 10**d); the same recurrence runs here over each track's listens sorted by the log's
    order, and the same rounding, so `top_tracks` breaks ties the same way (a plain Spark sum adds in any order,
    and Spark's `round` rounds half up).
    """
    from pyspark.sql import functions as F

    listens = F.array_sort(F.collect_list(F.struct(*ORDER_COLUMNS, "time")))

    def kahan(acc, listen):
        y = listen["time"] - acc["c"]
        total = acc["s"] + y
        return F.struct(total.alias("s"), ((total - acc["s"]) - y).alias("c"))

    start = F.struct(F.lit(0.0).alias("s"), F.lit(0.0).alias("c"))
    scale = float(10**POPULARITY_DECIMALS)
    total = F.aggregate("listens", start, kahan)["s"]
    return (
        events.groupBy("track")
        .agg(listens.alias("listens"))
        .select("track", (F.rint(total * scale) / scale).alias("popularity"))
    )


def top_tracks(events, n: int | None = None) -> list[int]:
    """Track ids most popular first, equal popularity to the smaller id (as `logs.top_tracks`)."""
    from pyspark.sql import functions as F

    ranking = track_popularity(events).orderBy(F.desc("popularity"), F.asc("track"))
    if n is not None:
        ranking = ranking.limit(n)
    return [int(row["track"]) for row in ranking.select("track").collect()]


# ---------------------------------------------------------------------------------------------------------------
# The A/B analysis


@dataclass
class SparkAbAnalysis:
    """The analyze stage's result from the Spark engine: the per-arm aggregates, the effects table (same columns
    as `ab.ab_effects`) and the SRM check; `ab_json()` and `latency_json()` are metrics/ab.json and latency.json."""

    experiment: str
    alpha: float
    statistics: pd.DataFrame
    totals: pd.DataFrame
    effects: pd.DataFrame
    srm: dict
    control: str = "C"
    moments: pd.DataFrame | None = None  # CUPED's per-arm moments, when a covariate log was given

    def ab_json(self) -> dict:
        return ab.ab_metrics_json(
            self.effects,
            experiment=self.experiment,
            totals=self.totals,
            srm=self.srm,
            control=self.control,
            alpha=self.alpha,
        )

    def latency_json(self) -> dict:
        return ab.latency_metrics_json(self.totals, self.statistics, self.effects, control=self.control)


def analyze_events(
    events,
    experiment: str,
    *,
    alpha: float,
    power: float = ab.DEFAULT_POWER,
    srm_alpha: float = ab.DEFAULT_SRM_ALPHA,
    control: str = "C",
    covariate_events=None,
    covariate_experiment: str | None = None,
) -> SparkAbAnalysis:
    """Sessions, user metrics and per-arm aggregates in Spark; Welch, SRM and Holm on the driver (`ab`). With
    `covariate_events` (an earlier log, its users' arms in `covariate_experiment`), CUPED's moments too."""
    sessions = sessionize(events, experiments=[experiment])
    metrics = user_metrics(sessions, experiment)
    aggregates = arm_aggregates(metrics, control=control)
    effects = ab.ab_effects_from_statistics(aggregates.statistics, control=control, alpha=alpha, power=power)
    srm = ab.srm_check(aggregates.totals.set_index("arm")["users"], alpha=srm_alpha)
    moments = None
    if covariate_events is not None:
        earlier = sessionize(covariate_events, experiments=[covariate_experiment])
        moments = covariate_moments(metrics, user_metrics(earlier, covariate_experiment), control=control)
    return SparkAbAnalysis(experiment, alpha, aggregates.statistics, aggregates.totals, effects, srm, control, moments)


def analyze_log_spark(
    log_path,
    experiment: str,
    *,
    alpha: float,
    power: float = ab.DEFAULT_POWER,
    srm_alpha: float = ab.DEFAULT_SRM_ALPHA,
    master: str = "local[2]",
    spark=None,
    config: dict | None = None,
    covariate_log=None,
    covariate_experiment: str | None = None,
) -> SparkAbAnalysis:
    """The analyze stage on Spark: read the log (folder, file or hdfs:// / s3a:// URI), sessionize, aggregate per
    arm, finish the statistics on the driver; with `covariate_log`, CUPED's moments from it. A session this call
    starts is stopped at the end."""
    from botify_lab.research.spark.session import spark_session

    own = spark is None
    if own:
        from pyspark.sql import SparkSession

        own = SparkSession.getActiveSession() is None
        spark = spark_session(master, config=config)
    try:
        return analyze_events(
            read_log(spark, log_path),
            experiment,
            alpha=alpha,
            power=power,
            srm_alpha=srm_alpha,
            covariate_events=None if covariate_log is None else read_log(spark, covariate_log),
            covariate_experiment=covariate_experiment,
        )
    finally:
        if own:
            spark.stop()


def to_pandas(frame) -> pd.DataFrame:
    """A small Spark DataFrame on the driver as pandas, numeric columns as numpy dtypes (no pyarrow needed)."""
    rows = frame.collect()
    columns = frame.columns
    table = pd.DataFrame([tuple(row) for row in rows], columns=columns)
    for field in frame.schema.fields:
        kind = field.dataType.typeName()
        if kind in ("long", "integer") and len(table) and table[field.name].notna().all():
            table[field.name] = table[field.name].astype(np.int64)
        elif kind == "double":
            table[field.name] = table[field.name].astype(np.float64)
    return table
