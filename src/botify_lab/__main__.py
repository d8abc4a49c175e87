"""Command line of the research code: `python -m botify_lab ab LOG --experiment NAME` analyses an event log.

The log is a botify log folder (data.json and its rotated files) or a single log file, gzipped or not, e.g. one of
the course's own logs. The analysis is the course's week-1 table: per user and arm, time and tracks per session,
each treatment against control C with Welch's interval; it prints the table and can write the figure and JSON.
`--engine spark` runs the same analysis as Spark jobs (`--master` any Spark master URL; Java 17 needed) for logs
too large for memory: only per-arm numbers come back, so the table is the same and the event count is not shown.
`--cuped EARLIER_LOG` adds the CUPED table: each user's time and tracks per session adjusted by the same metric in
an earlier log of the same users (its arms in `--cuped-experiment`), which narrows the intervals; the course's
table above it is unchanged.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import orjson


def _format_table(effects, colour: bool) -> str:
    from botify_lab.research.ab import GAIN_COLOUR, effect_colour

    header = (
        f"{'arm':<5} {'metric':<24} {'control':>9} {'treatment':>9} {'effect':>9} {'interval':>21} {'detectable':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in effects.itertuples():
        interval = f"[{row.lower:+.2f}%, {row.upper:+.2f}%]" if row.lower == row.lower else "n/a"
        line = (
            f"{row.treatment:<5} {row.metric:<24} {row.control_mean:>9.4f} {row.treatment_mean:>9.4f} "
            f"{row.effect:>+8.2f}% {interval:>21} {row.mde:>9.2f}%"
        )
        shade = effect_colour(row.metric, row.effect, row.significant)
        if shade:
            line += "  better" if shade == GAIN_COLOUR else "  worse"
            if colour:
                line = f"\033[{32 if shade == GAIN_COLOUR else 31}m{line}\033[0m"
        lines.append(line)
    return "\n".join(lines)


def _pandas_analysis(args):
    """(the header line, effects, SRM check, the JSON document's maker, CUPED's moments or None) of the log, in
    memory."""
    from botify_lab.research.ab import ab_effects, ab_metrics_json, arm_statistics, arm_totals, srm_check, user_metrics
    from botify_lab.research.logs import experiment_names, read_log, sessionize

    events = read_log(args.log)
    names = experiment_names(events)
    if args.experiment not in names:
        raise LookupError(f"no experiment {args.experiment!r} in {args.log}; the log has {names}")
    sessions = sessionize(events)
    metrics = user_metrics(sessions, args.experiment)
    moments = None
    if args.cuped:
        from botify_lab.research.ab import covariate_moments

        moments = covariate_moments(metrics, user_metrics(sessionize(read_log(args.cuped)), args.cuped_experiment))
    effects = ab_effects(metrics, alpha=args.alpha)
    srm = srm_check(metrics["arm"].value_counts())
    counts = arm_statistics(metrics, ["mean_time_per_session"]).set_index("arm")["count"]
    header = (
        f"{args.experiment}: {len(events):,} events, {len(sessions):,} closed sessions, users per arm "
        + ", ".join(f"{arm} {count}" for arm, count in counts.items())
    )
    return (
        header,
        effects,
        srm,
        lambda: ab_metrics_json(
            effects, experiment=args.experiment, totals=arm_totals(metrics), srm=srm, alpha=args.alpha
        ),
        moments,
    )


def _spark_analysis(args):
    """The same as `_pandas_analysis`, as Spark jobs on `args.master`."""
    from botify_lab.research.spark import analyze_log_spark

    analysis = analyze_log_spark(
        str(args.log),
        args.experiment,
        alpha=args.alpha,
        master=args.master,
        covariate_log=str(args.cuped) if args.cuped else None,
        covariate_experiment=args.cuped_experiment,
    )
    totals = analysis.totals.set_index("arm")
    if totals.empty:
        raise LookupError(f"no experiment {args.experiment!r} in {args.log}")
    header = (
        f"{args.experiment}: {int(totals['sessions'].sum()):,} closed sessions (Spark, {args.master}), users "
        "per arm " + ", ".join(f"{arm} {int(users)}" for arm, users in totals["users"].items())
    )
    return header, analysis.effects, analysis.srm, analysis.ab_json, analysis.moments


def _cuped_lines(cuped: dict) -> str:
    header = f"{'arm':<5} {'metric':<24} {'effect':>9} {'interval':>21} {'detectable':>10} {'variance removed':>17}"
    lines = [f"\nwith CUPED ({cuped['covariate']}):", header, "-" * len(header)]
    for treatment, metrics in cuped["effects"].items():
        for metric, row in metrics.items():
            removed = cuped["metrics"][metric]
            interval = f"[{row['lower']:+.2f}%, {row['upper']:+.2f}%]" if row["lower"] is not None else "n/a"
            lines.append(
                f"{treatment:<5} {metric:<24} {row['effect']:>+8.2f}% {interval:>21} {row['mde']:>9.2f}% "
                f"{100 * removed['variance_reduction']:>16.1f}%"
            )
    covered = max(numbers["covered_share"] for numbers in cuped["metrics"].values())
    lines.append(f"{covered:.1%} of the users are in the earlier log; the others are not adjusted")
    if not cuped["balanced"]:
        worst = min(row["covariate_balance_p"] for rows in cuped["effects"].values() for row in rows.values())
        lines.append(
            f"warning: the covariate differs between the arms (Welch p = {worst:.2g}): it depends on the arm (were "
            "the users in the same arms in the earlier log?), so CUPED removes part of the effect; do not use it"
        )
    return "\n".join(lines)


def command_ab(args) -> int:
    for log in (args.log, args.cuped):
        if log is not None and not log.exists() and "://" not in str(log):
            raise FileNotFoundError(f"no log at {log}")
    try:
        analysis = _spark_analysis if args.engine == "spark" else _pandas_analysis
        header, effects, srm, document, moments = analysis(args)
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cuped = None
    if moments is not None:
        from botify_lab.research.ab import cuped_document

        covariate = f"each user's same metric in {args.cuped} ({args.cuped_experiment})"
        cuped = cuped_document(moments, covariate=covariate, alpha=args.alpha)
    print(header)
    verdict = "MISMATCH: do not trust the effects" if srm["mismatch"] else "ok"
    print(f"sample-ratio check: p = {srm['p_value']:.4f} ({verdict})\n")
    print(_format_table(effects, colour=sys.stdout.isatty()))
    print(
        f"\neffects in percent of the control mean, {100 * (1 - args.alpha):.0f}% Welch intervals; "
        "'detectable' is the effect this many users find with 80% power"
    )
    if cuped is not None:
        print(_cuped_lines(cuped))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        table = document() | ({"cuped": cuped} if cuped is not None else {})
        args.json.write_bytes(orjson.dumps(table, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"table written to {args.json}")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        from botify_lab.research.figures import effects_figure

        args.figure.parent.mkdir(parents=True, exist_ok=True)
        effects_figure(effects, alpha=args.alpha, title=f"{args.experiment}: treatments vs control").savefig(
            args.figure, dpi=90
        )
        print(f"figure written to {args.figure}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m botify_lab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ab = commands.add_parser(
        "ab",
        help="the course's A/B table of an event log",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ab.add_argument("log", type=Path, help="log folder (data.json, data.json.1, ...) or one log file (.gz works)")
    ab.add_argument("--experiment", required=True, help="experiment name as logged, e.g. TOP_POP")
    ab.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of the intervals (default 0.05)")
    ab.add_argument("--figure", type=Path, help="write the effects figure (PNG) here")
    ab.add_argument("--json", type=Path, help="write the full table as JSON here")
    ab.add_argument(
        "--engine",
        choices=("pandas", "spark"),
        default="pandas",
        help="pandas in memory (default), or Spark jobs for logs larger than memory; the same table",
    )
    ab.add_argument(
        "--master",
        default="local[2]",
        help="with --engine spark: the Spark master URL (local[N], spark://host:7077, yarn, ...)",
    )
    ab.add_argument(
        "--cuped",
        type=Path,
        metavar="EARLIER_LOG",
        help="also the CUPED table, with each user's metric in this earlier log of the same users as the covariate",
    )
    ab.add_argument(
        "--cuped-experiment",
        metavar="NAME",
        help="the experiment that labels the users in the earlier log (default: --experiment)",
    )
    args = parser.parse_args(argv)
    args.cuped_experiment = args.cuped_experiment or args.experiment
    with warnings.catch_warnings():
        # One plain line per warning (what, where, how many), not Python's source echo that reads like a crash.
        warnings.showwarning = _print_warning
        try:
            return command_ab(args)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
