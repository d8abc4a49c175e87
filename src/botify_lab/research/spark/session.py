"""A SparkSession for the research code: `local[2]` by default, quiet, no web UI; any master Spark accepts.

Spark needs Java (17 or 21 for PySpark 4.x) on PATH or in JAVA_HOME; PySpark itself is pinned in requirements.txt.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
DEFAULT_MASTER = "local[2]"


class JavaMissing(RuntimeError):
    """No Java runtime for Spark: install one (`apt-get install openjdk-17-jre-headless`) or set JAVA_HOME."""


def java_available() -> bool:
    home = os.environ.get("JAVA_HOME")
    return bool(shutil.which("java") or (home and (Path(home) / "bin" / "java").exists()))


def spark_session(
    master: str = DEFAULT_MASTER, *, app_name: str = "botify-lab", config: Mapping[str, object] | None = None
):
    """Get or create the process's SparkSession (an existing one is returned as it is, whatever its master).

    Local masters get few shuffle partitions (the default 200 only adds task overhead on one machine); `config`
    adds or overrides any Spark setting, e.g. {"spark.driver.memory": "4g"} (it must come before the JVM starts).
    """
    if not java_available():
        raise JavaMissing(
            "Spark needs Java 17+ on PATH or in JAVA_HOME (Debian: apt-get install openjdk-17-jre-headless)"
        )
    from pyspark.sql import SparkSession

    # Python workers run this interpreter (the venv, where the project is installed) unless told otherwise;
    # PySpark reads the variable, not the `spark.pyspark.python` setting, when the driver is plain Python.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    settings: dict[str, object] = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "spark.executor.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
    }
    if master.startswith("local"):
        settings["spark.sql.shuffle.partitions"] = "8"
        settings["spark.driver.host"] = "127.0.0.1"
        settings["spark.driver.bindAddress"] = "127.0.0.1"
    settings.update({key: str(value) for key, value in (config or {}).items()})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
