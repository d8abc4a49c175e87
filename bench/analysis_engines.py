"""The A/B table of a large log: pandas against Spark local[2], time and peak memory; prints JSON.

1. Writes a synthetic log of `--events` events (default 10 million) in process: numpy columns, JSON lines in
   `--files` rotated files (`botify_lab.research.spark.synthetic`, the generator the engine-equality tests use).
2. Runs the full A/B table (read, sessionize, user metrics, per-arm statistics, Welch/Holm/MDE, SRM, the
   metrics/ab.json document) once per engine, each in its own process, sampling the RSS of the whole process tree
   (for Spark: Python, spark-submit and the JVM) every 0.2 s; checks both engines gave the same document.
3. The largest log each engine handles within `--memory-gb` (default 8): runs over `--search` sizes (default
   10M,20M,40M), killing a run whose tree passes the limit or `--timeout` seconds; an engine that fails one size
   is not tried on larger ones. `--search ''` skips it.

Run smaller with e.g. `--events 2000000 --search 2000000,4000000`. Spark's JVM gets `--spark-driver-memory`
(default 5g, so the tree stays under 8 GB).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
EXPERIMENT = "EXP"


# ---------------------------------------------------------------------------------------------------------------
# One engine, in a child process


def run_engine(engine: str, log: str, out: str, driver_memory: str) -> None:
    started = time.perf_counter()
    if engine == "pandas":
        import warnings

        from botify_lab.research import ab
        from botify_lab.research.logs import read_log, sessionize

        warnings.simplefilter("ignore")
        events = read_log(log)
        read_seconds = time.perf_counter() - started
        metrics = ab.user_metrics(sessionize(events), EXPERIMENT)
        effects = ab.ab_effects(metrics)
        document = ab.ab_metrics_json(
            effects,
            experiment=EXPERIMENT,
            totals=ab.arm_totals(metrics),
            srm=ab.srm_check(metrics["arm"].value_counts()),
        )
        phases = {"read": read_seconds, "table": time.perf_counter() - started - read_seconds}
    else:
        from botify_lab.research.spark.engine import analyze_log_spark
        from botify_lab.research.spark.session import spark_session

        spark = spark_session("local[2]", app_name="bench", config={"spark.driver.memory": driver_memory})
        session_seconds = time.perf_counter() - started
        analysis = analyze_log_spark(log, EXPERIMENT, alpha=0.05, spark=spark)
        document = analysis.ab_json()
        phases = {"session_start": session_seconds, "table": time.perf_counter() - started - session_seconds}
        spark.stop()
    Path(out).write_text(json.dumps({"seconds": time.perf_counter() - started, "phases": phases, "document": document}))


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(engine: str, log: Path, *, limit_bytes: int, timeout: float, driver_memory: str) -> dict:
    """Run one engine on one log in a child process; wall time, peak tree RSS, and whether it finished."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    command = [
        sys.executable,
        __file__,
        "--run-engine",
        engine,
        "--log",
        str(log),
        "--out",
        out,
        "--spark-driver-memory",
        driver_memory,
    ]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    process = psutil.Process(child.pid)
    peak, reason = 0, None
    while child.poll() is None:
        peak = max(peak, tree_rss(process))
        if peak > limit_bytes:
            reason = f"passed {limit_bytes / 2**30:.0f} GB"
        elif time.perf_counter() - started > timeout:
            reason = f"passed {timeout:.0f} s"
        if reason:
            for member in [*process.children(recursive=True), process]:
                try:
                    member.kill()
                except psutil.Error:
                    pass
            child.wait()
            break
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    result = {"engine": engine, "wall_seconds": round(seconds, 2), "peak_rss_gb": round(peak / 2**30, 3)}
    if reason is None and child.returncode != 0:
        reason = f"exit {child.returncode}: {stderr.strip().splitlines()[-1] if stderr.strip() else ''}"
    if reason is None:
        report = json.loads(Path(out).read_text())
        result.update(
            ok=True,
            seconds=round(report["seconds"], 2),
            phases={key: round(value, 2) for key, value in report["phases"].items()},
            document=report["document"],
        )
    else:
        result.update(ok=False, reason=reason)
    Path(out).unlink(missing_ok=True)
    return result


# ---------------------------------------------------------------------------------------------------------------
# The log and the comparison


def generate(folder: Path, events: int, files: int, seed: int) -> dict:
    from botify_lab.research.spark.synthetic import write_synthetic_log

    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    paths = write_synthetic_log(folder, events, seed=seed, files=files)
    seconds = time.perf_counter() - started
    size = sum(path.stat().st_size for path in paths)
    return {
        "events": events,
        "files": len(paths),
        "gb": round(size / 2**30, 3),
        "seconds": round(seconds, 1),
        "events_per_second": round(events / seconds),
    }


def same_document(left, right, relative: float = 1e-9) -> bool:
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and list(left) == list(right)
            and all(same_document(left[key], right[key], relative) for key in left)
        )
    if isinstance(left, list):
        return (
            isinstance(right, list)
            and len(left) == len(right)
            and all(same_document(a, b, relative) for a, b in zip(left, right))
        )
    if isinstance(left, float) and isinstance(right, float):
        return math.isclose(left, right, rel_tol=relative, abs_tol=1e-300)
    return type(left) is type(right) and left == right


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1].lower(), 1)
        sizes.append(int(float(part[:-1] if scale > 1 else part) * scale))
    return sorted(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=parse_sizes, default=[10_000_000], help="events of the timed log (10M)")
    parser.add_argument("--files", type=int, default=8, help="rotated files the log is written in")
    parser.add_argument("--search", default="10M,20M,40M", help="log sizes for the 8 GB search ('' skips it)")
    parser.add_argument("--memory-gb", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before one run counts as failed")
    parser.add_argument("--spark-driver-memory", default="5g")
    parser.add_argument("--engines", default="pandas,spark")
    parser.add_argument("--workdir", type=Path, default=None, help="where logs are written (a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-engine", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_engine:
        run_engine(args.run_engine, args.log, args.out, args.spark_driver_memory)
        return

    engines = [engine.strip() for engine in args.engines.split(",") if engine.strip()]
    limit = int(args.memory_gb * 2**30)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="analysis-engines-"))
    workdir.mkdir(parents=True, exist_ok=True)
    options = dict(limit_bytes=limit, timeout=args.timeout, driver_memory=args.spark_driver_memory)
    report: dict = {
        "machine": {
            "cores": psutil.cpu_count(),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        },
        "spark_master": "local[2]",
        "spark_driver_memory": args.spark_driver_memory,
        "memory_limit_gb": args.memory_gb,
    }
    try:
        events = args.events[0]
        log = workdir / f"log-{events}"
        report["log"] = generate(log, events, args.files, args.seed)
        runs = {engine: measure(engine, log, **options) for engine in engines}
        documents = [run.pop("document") for run in runs.values() if run.get("ok")]
        report["ab_table"] = runs
        if len(documents) == 2:
            report["ab_table"]["same_ab_json"] = same_document(documents[0], documents[1])
        shutil.rmtree(log, ignore_errors=True)

        search, largest, alive = [], {engine: None for engine in engines}, set(engines)
        for size in parse_sizes(args.search):
            if not alive:
                break
            log = workdir / f"log-{size}"
            generated = generate(log, size, args.files, args.seed)
            for engine in sorted(alive):
                run = measure(engine, log, **options)
                run.pop("document", None)
                search.append({"events": size, "gb": generated["gb"], **run})
                if run["ok"]:
                    largest[engine] = size
                else:
                    alive.discard(engine)
            shutil.rmtree(log, ignore_errors=True)
        if search:
            report["search"] = search
            report["largest_within_limit"] = {
                engine: (f">= {largest[engine]:,}" if engine in alive else largest[engine]) for engine in engines
            }
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
