"""Command line of the research code: `python -m botify_lab ab LOG --experiment NAME` analyses an event log.

The log is a botify log folder (data.json and its rotated files) or a single log file, gzipped or not, e.g. one of
the course's own logs. The analysis is the course's week-1 table: per user and arm, time and tracks per session,
each treatment against control C with Welch's interval; it prints the table and can write the figure and JSON.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson


def _format_table(effects, colour: bool) -> str:
    from botify_lab.research.ab import GAIN_COLOUR, effect_colour

    header = (f"{'arm':<5} {'metric':<24} {'control':>9} {'treatment':>9} {'effect':>9} "
              f"{'interval':>21} {'detectable':>10}")
    lines = [header, "-" * len(header)]
    for row in effects.itertuples():
        interval = f"[{row.lower:+.2f}%, {row.upper:+.2f}%]" if row.lower == row.lower else "n/a"
        line = (f"{row.treatment:<5} {row.metric:<24} {row.control_mean:>9.4f} {row.treatment_mean:>9.4f} "
                f"{row.effect:>+8.2f}% {interval:>21} {row.mde:>9.2f}%")
        shade = effect_colour(row.metric, row.effect, row.significant)
        if shade:
            line += "  better" if shade == GAIN_COLOUR else "  worse"
            if colour:
                line = f"\033[{32 if shade == GAIN_COLOUR else 31}m{line}\033[0m"
        lines.append(line)
    return "\n".join(lines)


def command_ab(args) -> int:
    from botify_lab.research.ab import (ab_effects, ab_metrics_json, arm_statistics, srm_check, user_metrics)
    from botify_lab.research.logs import experiment_names, read_log, sessionize

    events = read_log(args.log)
    names = experiment_names(events)
    if args.experiment not in names:
        print(f"error: no experiment {args.experiment!r} in {args.log}; the log has {names}", file=sys.stderr)
        return 2
    sessions = sessionize(events)
    metrics = user_metrics(sessions, args.experiment)
    effects = ab_effects(metrics, alpha=args.alpha)
    srm = srm_check(metrics["arm"].value_counts())
    counts = arm_statistics(metrics, ["mean_time_per_session"]).set_index("arm")["count"]
    print(f"{args.experiment}: {len(events):,} events, {len(sessions):,} closed sessions, users per arm "
          + ", ".join(f"{arm} {count}" for arm, count in counts.items()))
    print(f"sample-ratio check: p = {srm['p_value']:.4f} ({'MISMATCH: do not trust the effects' if srm['mismatch'] else 'ok'})\n")
    print(_format_table(effects, colour=sys.stdout.isatty()))
    print(f"\neffects in percent of the control mean, {100 * (1 - args.alpha):.0f}% Welch intervals; "
          "'detectable' is the effect this many users find with 80% power")
    if args.json:
        document = ab_metrics_json(effects, experiment=args.experiment, metrics=metrics, srm=srm, alpha=args.alpha)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"table written to {args.json}")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        from botify_lab.research.figures import effects_figure

        args.figure.parent.mkdir(parents=True, exist_ok=True)
        effects_figure(effects, alpha=args.alpha, title=f"{args.experiment}: treatments vs control").savefig(
            args.figure, dpi=90)
        print(f"figure written to {args.figure}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m botify_lab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ab = commands.add_parser("ab", help="the course's A/B table of an event log",
                             description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ab.add_argument("log", type=Path, help="log folder (data.json, data.json.1, ...) or one log file (.gz works)")
    ab.add_argument("--experiment", required=True, help="experiment name as logged, e.g. TOP_POP")
    ab.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of the intervals (default 0.05)")
    ab.add_argument("--figure", type=Path, help="write the effects figure (PNG) here")
    ab.add_argument("--json", type=Path, help="write the full table as JSON here")
    args = parser.parse_args(argv)
    try:
        return command_ab(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
