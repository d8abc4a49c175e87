"""The log analysis on Spark: the same tables and A/B numbers as the pandas engine (`research.logs`, `research.ab`)
as Spark DataFrame jobs, for logs past one machine. PySpark is imported only when a function runs."""

from botify_lab.research.spark.engine import (
    ORDER_COLUMNS,
    ArmAggregates,
    SparkAbAnalysis,
    analyze_events,
    analyze_log_spark,
    arm_aggregates,
    experiment_names,
    log_file_uris,
    read_log,
    sessionize,
    to_pandas,
    top_tracks,
    track_popularity,
    training_pairs,
    user_metrics,
)
from botify_lab.research.spark.session import DEFAULT_MASTER, JavaMissing, java_available, spark_session

__all__ = [
    "ORDER_COLUMNS",
    "ArmAggregates",
    "SparkAbAnalysis",
    "analyze_events",
    "analyze_log_spark",
    "arm_aggregates",
    "experiment_names",
    "log_file_uris",
    "read_log",
    "sessionize",
    "to_pandas",
    "top_tracks",
    "track_popularity",
    "training_pairs",
    "user_metrics",
    "DEFAULT_MASTER",
    "JavaMissing",
    "java_available",
    "spark_session",
]
