"""Stage `report`: the executed notebooks as self-contained HTML pages (no CDN links) and the study's front page."""

from __future__ import annotations

import argparse
import base64
import functools
import html
import re
from pathlib import Path

import nbformat
import orjson
from nbconvert import HTMLExporter

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import atomic_output_dir
from botify_lab.pipeline.params import PARAMS_FILE, ModelParams, Params, load_params
from botify_lab.research.ab import GAIN_COLOUR, LOSS_COLOUR, effect_colour
from botify_lab.research.published import TOP_POP_ARMS

TEMPLATE = Path(__file__).with_name("templates") / "offline.html.j2"
EXTERNAL_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']\s*(?:https?:)?//""", re.IGNORECASE)


@functools.cache
def html_exporter() -> HTMLExporter:
    """One exporter for every page: a new one compiles its ten Jinja templates again (1.7 s of the stage's 4)."""
    return HTMLExporter(template_file=str(TEMPLATE))


def notebook_to_html(notebook_path: Path) -> str:
    body, _ = html_exporter().from_notebook_node(nbformat.read(notebook_path, as_version=4))
    external = EXTERNAL_REFERENCE.findall(body)
    if external:
        raise RuntimeError(f"{notebook_path}: the HTML still loads {len(external)} external resources")
    return body


def percent(value, signed: bool = True) -> str:
    """A percent for the index; n/a where the analysis had too few users to give a number (null in the JSON)."""
    if value is None:
        return "n/a"
    return f"{value:+.2f}%" if signed else f"{value:.2f}%"


def number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _read_json(path: Path) -> dict:
    return orjson.loads(path.read_bytes()) if path.is_file() else {}


def _figure(path: Path, alt: str) -> str:
    """A PNG inlined as base64, so the page loads nothing from elsewhere."""
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _effect_cells(metric: str, values: dict) -> str:
    shade = effect_colour(metric, values.get("effect") or 0.0, bool(values.get("significant")))
    style = f' style="background-color: {shade}"' if shade else ""
    verdict = "significant" if values.get("significant") else "not significant"
    return (
        f"<td{style}>{percent(values.get('effect'))}</td>"
        f"<td{style}>[{percent(values.get('lower'))}, {percent(values.get('upper'))}]</td>"
        f"<td>{verdict}</td><td>{percent(values.get('mde'), signed=False)}</td>"
    )


def metric_rows(ab_metrics: dict, latency: dict | None = None) -> str:
    """One row per treatment and metric of metrics/ab.json (and latency.json), coloured as the course did."""
    rows = []
    effects = {treatment: dict(metrics) for treatment, metrics in ab_metrics.get("effects", {}).items()}
    for treatment, metrics in (latency or {}).get("effects", {}).items():
        effects.setdefault(treatment, {}).update(metrics)
    for treatment, metrics in effects.items():
        for metric, values in metrics.items():
            rows.append(
                f"<tr><td>{html.escape(treatment)}</td><td>{html.escape(metric)}</td>"
                f"<td>{number(values.get('control_mean'), 4)}</td><td>{number(values.get('treatment_mean'), 4)}</td>"
                f"{_effect_cells(metric, values)}</tr>"
            )
    return "\n".join(rows)


def _cuped_table(ab_metrics: dict) -> str:
    """The CUPED rows beside the plain ones: the same test, each user's metric adjusted by their earlier one."""
    cuped = ab_metrics.get("cuped")
    if not cuped:
        return ""
    rows = []
    for treatment, metrics in cuped["effects"].items():
        for metric, values in metrics.items():
            plain = ab_metrics["effects"].get(treatment, {}).get(metric, {})
            removed = cuped["metrics"][metric]
            rows.append(
                f"<tr><td>{html.escape(treatment)}</td><td>{html.escape(metric)}</td>"
                f"<td>[{percent(plain.get('lower'))}, {percent(plain.get('upper'))}]</td>"
                f"{_effect_cells(metric, values)}"
                f"<td>{_share(removed.get('variance_reduction'))} (theta {number(removed.get('theta'))}, "
                f"{_share(removed.get('covered_share'))} of users covered)</td></tr>"
            )
    return (
        f"<p><b>With CUPED</b> (covariate: {html.escape(cuped['covariate'])}): the same users and sessions, each "
        "user's metric minus theta times their earlier metric's distance from its mean. The expected effect stays; "
        "the variance the earlier day explains goes, so the interval narrows and a smaller effect is detectable.</p>"
        "<table><tr><th>arm</th><th>metric</th><th>plain interval</th><th>effect</th><th>CUPED interval</th><th></th>"
        "<th>detectable with 80% power</th><th>variance removed</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _model_description(name: str, model: ModelParams) -> str:
    return (
        f"<b>{html.escape(model.label)}</b> (<code>models.{html.escape(name)}</code>: "
        f"{html.escape(model.similarity)} similarity, dimension {model.embedding_dim}, {model.loss.upper()} loss)"
    )


def _served_description(params: Params, name: str) -> str:
    if name in params.models:
        return f"the Contextual recommender serving the neighbours of {_model_description(name, params.models[name])}"
    spec = params.recommenders[name]
    return (
        f"<b>{html.escape(spec.label)}</b>, a recommender of one's own (<code>recommenders.{html.escape(name)}</code>: "
        f"{html.escape(spec.class_name)} of {html.escape(spec.file)})"
    )


def _homework_section(params: Params | None, ab_metrics: dict, latency: dict, figures: Path) -> str:
    if not ab_metrics:
        return ""
    arms = ab_metrics.get("arms", {})
    who = {"C": params.simulate.control, "T1": params.simulate.treatment} if params is not None else {}
    arm_items = "".join(
        f"<li><b>{arm}</b> ({'control' if arm == 'C' else 'treatment'}): {_served_description(params, name)}; "
        f"{arms.get(arm, {}).get('users', 0):,} users, {arms.get(arm, {}).get('sessions', 0):,} sessions</li>"
        for arm, name in who.items()
    )
    srm = ab_metrics.get("srm", {})
    srm_text = (
        f"Sample-ratio check: p = {srm['p_value']:.3f} "
        + (
            "(a MISMATCH: the split is broken, do not trust the effects)."
            if srm.get("mismatch")
            else "(the split is as designed)."
        )
        if srm
        else ""
    )
    return (
        f"<h2>The homework A/B test ({html.escape(str(ab_metrics.get('experiment', '')))})</h2>"
        f"<p>Can the homework's model beat the course's Contextual model on time per session? Both arms are served "
        f"by the real service to the same seeded simulated traffic; each user's arm is fixed by a hash.</p>"
        f"<ul>{arm_items}</ul><p>{srm_text}</p>"
        "<table><tr><th>arm</th><th>metric</th><th>control mean</th><th>treatment mean</th><th>effect</th>"
        f"<th>{100 * (1 - ab_metrics.get('alpha', 0.05)):.0f}% Welch interval</th><th></th>"
        "<th>detectable with 80% power</th></tr>"
        f"{metric_rows(ab_metrics, latency)}</table>{_cuped_table(ab_metrics)}"
        f"{_figure(figures / 'ab_effects.png', 'effects with their intervals')}"
    )


def _leaderboard_section(board: dict, figures: Path) -> str:
    if not board:
        return ""
    labels = board.get("recommenders", {})
    rows = []
    for arm, means in board.get("arm_means", {}).items():
        values = board.get("effects", {}).get(arm, {}).get("mean_time_per_session")
        effect = (
            _effect_cells("mean_time_per_session", values) if values else "<td></td><td></td><td>control</td><td></td>"
        )
        rows.append(
            f"<tr><td>{arm}</td><td>{html.escape(labels.get(arm, arm))}</td>"
            f"<td>{number(means.get('mean_time_per_session'))}</td>"
            f"<td>{number(means.get('mean_tracks_per_session'))}</td>{effect}</tr>"
        )
    return (
        "<h2>The course's leaderboard</h2>"
        "<p>Every recommender in one experiment, Random as the control, effects on mean time per session.</p>"
        "<table><tr><th>arm</th><th>recommender</th><th>time per session</th><th>tracks per session</th>"
        "<th>effect vs Random</th><th>interval</th><th></th><th>detectable</th></tr>"
        f"{''.join(rows)}</table>{_figure(figures / 'leaderboard.png', 'leaderboard')}"
    )


def _fidelity_section(fidelity: dict, figures: Path) -> str:
    """Whether to trust the rest: the world against the course's real logs, in a paragraph and one figure."""
    if not fidelity:
        return ""
    checks, failed = fidelity.get("checks", 0), fidelity.get("failed", 0)
    worst = fidelity.get("worst") or {}
    verdict = (
        f"all {checks} checks within tolerance"
        if fidelity.get("passed")
        else f"{failed} of {checks} checks OUTSIDE tolerance"
    )
    worst_text = (
        f"; {'the closest to its limit' if fidelity.get('passed') else 'the farthest'}: "
        f"{html.escape(str(worst.get('check')))} at {number(worst.get('distance'), 2)} of its tolerance"
        if worst
        else ""
    )
    return (
        "<h2>Does this world react like the course's? The real logs</h2>"
        "<p>Random, StickyArtist and the course's 2023 Contextual (as this pipeline trains it) served through the "
        "service as the course's real logs ran them, every statistic of those logs computed the same way from both: "
        f"{verdict}{worst_text}. Every check and the other figures are on the "
        '<a href="fidelity.html">fidelity page</a>.</p>'
        f"{_figure(figures / 'fidelity_random.png', 'listen times of Random: real logs and this world')}"
    )


def _feedback_section(feedback: dict, figures: Path) -> str:
    """Where the models' data came from: the loop of days, round by round, in one sentence and one figure."""
    rounds = feedback.get("rounds") or {}
    if not rounds:
        return ""
    served = []
    for name, entry in rounds.items():
        arms = [
            f"{arm} {number(values.get('mean_time_per_session'))}"
            for arm, values in entry["arms"].items()
            if arm != "all"
        ]
        served.append(f"{name} {', '.join(arms)}")
    final = feedback.get("final") or {}
    return (
        "<h2>Where the models' data came from: the loop of days</h2>"
        "<p>As in the course, the service first served recommenders that need no model, then, day after day, the "
        "model retrained on everything logged so far (with a share of random exploration). Time per session by round "
        f"and arm: {html.escape('; '.join(served))}. The models above trained on all {len(rounds)} rounds "
        f"({number(final.get('pairs'), 0)} pairs; {html.escape(str(final.get('model')))}'s test MSE "
        f"{number(final.get('model_mse'), 4)} against the train mean's {number(final.get('train_mean_mse'), 4)}).</p>"
        f"{_figure(figures / 'feedback_loop.png', 'the loop of days, round by round')}"
    )


def _p_value(value) -> str:
    return "n/a" if value is None else "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def _sweep_section(document: dict, figures: Path) -> str:
    """The homework report's ablation: every variant offline and online, coloured as the course coloured effects."""
    variants = document.get("variants") or {}
    if not variants:
        return ""
    k, alpha = document.get("k"), document.get("alpha", 0.05)
    rows = []
    for name, row in sorted(variants.items(), key=lambda item: -(item[1].get("effect") or 0.0)):
        verdict = bool(row.get("significant_holm"))
        shade = effect_colour("mean_time_per_session", row.get("effect") or 0.0, verdict)
        style = f' style="background-color: {shade}"' if shade else ""
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{number(row.get('test_mse'), 4)}</td>"
            f"<td>{number(row.get('mse_vs_train_mean'))}</td><td>{number(row.get('hit_rate'), 4)}</td>"
            f"<td>{number(row.get('ndcg'), 4)}</td><td>{_share(row.get('coverage_share'))}</td>"
            f"<td>{_share(row.get('same_artist_share'))}</td><td{style}>{percent(row.get('effect'))}</td>"
            f"<td{style}>[{percent(row.get('lower'))}, {percent(row.get('upper'))}]</td>"
            f"<td>{_p_value(row.get('p_holm'))}</td></tr>"
        )
    correlations = ", ".join(
        f"{html.escape(metric)} {number(found.get('spearman'), 2)}"
        for metric, found in document.get("rank_correlations", {}).items()
    )
    control = html.escape(str(document.get("control_label", document.get("control"))))
    return (
        "<h2>The homework's ablation: every variant, offline and online</h2>"
        f"<p>Each variant is the homework's model ({html.escape(str(document.get('base')))}) with one point of the "
        "grid, trained on the same pairs, then A/B tested against the course's "
        f"{control} on the same seeded users as every other variant (common random numbers, served in process: the "
        f"control arm's time per session is {number(document.get('control_mean'))} in every test). "
        f"Effects on time per session with {100 * (1 - alpha):.0f}% Welch intervals; green or red where Holm's "
        f"correction across the {len(variants)} variants keeps the effect significant. Offline: test MSE, its ratio to "
        f"the train mean's, and hit rate and NDCG at {k} of the held-out pairs' well-listened tracks among the first "
        f"track's exported neighbours. Rank correlation of each offline metric with the online effect (Spearman, "
        f"over the variants): {correlations}.</p>"
        "<table><tr><th>variant</th><th>test MSE</th><th>/ train mean</th><th>hit rate</th><th>NDCG</th>"
        f"<th>coverage</th><th>same artist</th><th>effect vs {control}</th><th>interval</th><th>Holm p</th></tr>"
        f"{''.join(rows)}</table>{_figure(figures / 'sweep.png', 'offline metrics against the online effect')}"
    )


def _share(value) -> str:
    """A share in percent, with a decimal below 10% (a support of 0.1% is not 0%)."""
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if abs(value) < 0.1 else f"{100 * value:.0f}%"


def _interval_cell(found: dict) -> str:
    return f"{number(found.get('value'))} [{number(found.get('ci_low'))}, {number(found.get('ci_high'))}]"


def _ope_section(document: dict, figures: Path) -> str:
    """Judged before serving: each logging policy's off-policy estimates of the leaderboard, beside the online value."""
    estimates = document.get("estimates") or {}
    if not estimates:
        return ""
    online = document["online"]
    estimators = ("IPS", "SNIPS", "DR")
    tables = []
    for logger, targets in estimates.items():
        rows = []
        for label, row in targets.items():
            truth = online[label]
            support = row.get("support")
            short = support is not None and support < 0.99
            cells = "".join(
                f"<td>{_interval_cell(row[name])}<br><small>bias {number(row[name].get('bias'))}, coverage "
                f"{_share(row[name].get('coverage'))}</small></td>"
                for name in estimators
            )
            shade = f" style='background-color: {LOSS_COLOUR}'" if short else ""
            rows.append(
                f"<tr><td>{html.escape(label)}</td><td>{_interval_cell({'value': truth['per_step'], **truth})}</td>"
                f"<td>{number(truth.get('mean_time_per_session'))}</td>"
                f"<td{shade}>{_share(support)}</td>{cells}</tr>"
            )
        ranks = ", ".join(
            f"{name} {number(value, 2)}" for name, value in document.get("rank_correlation", {}).get(logger, {}).items()
        )
        decisions = document["logging"]["loggers"][logger]["decisions"]
        tables.append(
            f"<h3>Logged by {html.escape(logger)} ({decisions:,} decisions)</h3>"
            "<table><tr><th>recommender</th><th>online, per decision</th><th>online, time per session</th>"
            f"<th>support</th>{''.join(f'<th>{name}</th>' for name in estimators)}</tr>{''.join(rows)}</table>"
            f"<p>Rank correlation of the estimates with the online values per decision (Spearman): {ranks}.</p>"
        )
    return (
        "<h2>Judged before serving: off-policy estimates against the online truth</h2>"
        "<p>Every recommender of the leaderboard but the classes of one's own (which give no distribution over tracks "
        "to weigh) estimated before it is served, from the log of a held-out day "
        f"(day {document['logging'].get('day')}, after the loop's last round: no model trained on it) on which Random "
        "and StickyArtist served: its mean listen time of the next track by IPS, self-normalised IPS and doubly "
        f"robust (reward model: {html.escape(document.get('reward_model', ''))}), with 95% intervals. Beside each, "
        "what it earned when it was served in the leaderboard. Bias is estimate minus online value; coverage is the "
        f"share of {document.get('replicates')} disjoint user groups of the log whose estimate lies within the 95% "
        "interval of its difference from the online value. Support is the share of the recommender's draw that the "
        "logging policy could have served at all: where it is short of 100% (shaded), the estimators cannot see the "
        "rest, and the estimate says nothing about it. An estimate is the next-track reward in the logging policy's "
        "contexts; served, the recommender also chooses what users hear before, which no one-step estimate sees.</p>"
        f"{''.join(tables)}{_figure(figures / 'ope.png', 'off-policy estimates beside the online values')}"
    )


def _calibration_section(calibration: dict, tolerances: dict) -> str:
    if not calibration:
        return ""
    names = {arm: name for arm, name, _ in TOP_POP_ARMS}
    rows = []
    for arm, metrics in calibration.get("arms", {}).items():
        for metric, cell in metrics.items():
            calibrated = cell.get("within_tolerance")  # None: published for reference, not a calibration target
            shade = "transparent" if calibrated is None else GAIN_COLOUR if calibrated else LOSS_COLOUR
            allowed = f" (±{100 * tolerances[metric]:.0f}% allowed)" if metric in tolerances else " (not a target)"
            rows.append(
                f"<tr><td>{arm} {html.escape(names.get(arm, ''))}</td><td>{metric}</td>"
                f"<td>{number(cell.get('published'))}</td><td>{number(cell.get('simulated'))}</td>"
                f"<td style='background-color: {shade}'>{number(cell.get('ratio'))}{allowed}</td></tr>"
            )
    verdict = "within tolerance and in the published order" if calibration.get("calibrated") else "NOT calibrated"
    return (
        "<h2>Is this world the course's? The published TOP_POP table</h2>"
        f"<p>The course's week-1 experiment replayed through the service over {len(calibration.get('seeds', []))} "
        f"seeds: {verdict}.</p>"
        "<table><tr><th>arm</th><th>metric</th><th>published</th><th>simulated</th><th>ratio</th></tr>"
        f"{''.join(rows)}</table>"
    )


DEFINITIONS = """<h2>Metrics</h2><dl>
<dt>mean_time_per_session</dt><dd>per user, total listen time (each track's heard share, 0..1, summed) over their
sessions, divided by the number of sessions; the arm's value is the mean over its users. The homework's target.</dd>
<dt>mean_tracks_per_session</dt><dd>per user, log rows (tracks played) per session, averaged over users.</dd>
<dt>time, sessions</dt><dd>per user totals, averaged over users.</dd>
<dt>mean_request_latency</dt><dd>per user, milliseconds the service spent per request (lower is better). Not in
these tables: the pipeline's service runs on a simulated clock so that every run writes the same log, and measures
no latency; <code>bench/service_load.py</code> measures it, and a service started by hand logs it.</dd>
<dt>effect, interval</dt><dd>treatment mean minus control mean in percent of the control mean, with Welch's t
interval; green: significantly better, red: significantly worse. "Detectable" is the smallest effect this many
users would find with 80% power.</dd></dl>"""

STYLE = """<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,td:nth-child(2),th{text-align:left}img{max-width:100%}</style>"""


def build_index(
    pages: list[tuple[str, str]],
    ab_metrics: dict,
    *,
    params: Params | None = None,
    latency: dict | None = None,
    leaderboard: dict | None = None,
    calibration: dict | None = None,
    fidelity: dict | None = None,
    feedback: dict | None = None,
    ope: dict | None = None,
    sweep: dict | None = None,
    figures: Path = layout.FIGURES,
) -> str:
    """The study's front page: what was compared, the answers with their colours and figures, links to the rest."""
    links = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(title)}</a></li>' for title, href in pages)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>botify-lab: the study</title>{STYLE}</head><body>"
        "<h1>botify-lab: the study</h1>"
        "<p>Simulated users listened to the botify service; models learned from its event log; A/B tests served them "
        "back to seeded traffic. Every number below was regenerated by <code>make repro</code>.</p>"
        f"{_homework_section(params, ab_metrics, latency or {}, figures)}"
        f"{_leaderboard_section(leaderboard or {}, figures)}"
        f"{_sweep_section(sweep or {}, figures)}"
        f"{_ope_section(ope or {}, figures)}"
        f"{_fidelity_section(fidelity or {}, figures)}"
        f"{_feedback_section(feedback or {}, figures)}"
        f"{_calibration_section(calibration or {}, params.calibrate.tolerances if params is not None else {})}"
        f"{DEFINITIONS}<h2>Notebooks</h2><ul>{links}</ul></body></html>\n"
    )


def page_order(notebook: Path) -> tuple[int, str]:
    """Pages in the order the pipeline runs: training, export, simulation, analysis, then the rest."""
    stages = ("train", "export", "simulate", "ab_analysis", "calibration", "leaderboard")
    rank = next((i for i, stage in enumerate(stages) if notebook.stem.startswith(stage)), len(stages))
    return rank, notebook.stem


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=layout.NOTEBOOKS, help="folder of executed notebooks")
    parser.add_argument("--out", type=Path, default=layout.REPORT)
    parser.add_argument("--metrics", type=Path, default=layout.METRICS, help="folder of the metrics files")
    parser.add_argument("--analysis", type=Path, default=layout.ANALYSIS, help="folder of the A/B analysis details")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    args = parser.parse_args(argv)
    params = load_params(args.params) if args.params.is_file() else None
    with atomic_output_dir(args.out) as scratch:
        pages = []
        for notebook in sorted(args.notebooks.glob("*.ipynb"), key=page_order):
            page = f"{notebook.stem}.html"
            (scratch / page).write_text(notebook_to_html(notebook), encoding="utf-8")
            pages.append((notebook.stem, page))
        index = build_index(
            pages,
            _read_json(args.metrics / "ab.json"),
            params=params,
            latency=_read_json(args.analysis / "latency.json"),
            leaderboard=_read_json(args.metrics / "leaderboard.json"),
            calibration=_read_json(args.metrics / "calibration.json"),
            fidelity=_read_json(args.metrics / "fidelity.json"),
            feedback=_read_json(args.metrics / "feedback.json"),
            ope=_read_json(args.metrics / "ope.json"),
            sweep=_read_json(args.metrics / "sweep.json"),
        )
        (scratch / "index.html").write_text(index, encoding="utf-8")
    print(f"report: {len(pages)} pages and index.html in {args.out}")


if __name__ == "__main__":
    main()
