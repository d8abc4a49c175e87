"""Stage `report`: the executed notebooks as self-contained HTML pages (no CDN links) with an index page."""
from __future__ import annotations

import argparse
import html
import re
from pathlib import Path

import nbformat
import orjson
from nbconvert import HTMLExporter

from botify_lab.pipeline.outputs import atomic_output_dir

TEMPLATE = Path(__file__).with_name("templates") / "offline.html.j2"
EXTERNAL_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']\s*(?:https?:)?//""", re.IGNORECASE)


def notebook_to_html(notebook_path: Path) -> str:
    exporter = HTMLExporter(template_file=str(TEMPLATE))
    body, _ = exporter.from_notebook_node(nbformat.read(notebook_path, as_version=4))
    external = EXTERNAL_REFERENCE.findall(body)
    if external:
        raise RuntimeError(f"{notebook_path}: the HTML still loads {len(external)} external resources")
    return body


def percent(value, signed: bool = True) -> str:
    """A percent for the index; n/a where the analysis had too few users to give a number (null in the JSON)."""
    if value is None:
        return "n/a"
    return f"{value:+.2f}%" if signed else f"{value:.2f}%"


def metric_rows(ab_metrics: dict) -> str:
    """One table row per treatment and metric of metrics/ab.json, so the index shows the answer at a glance."""
    rows = []
    for treatment, metrics in ab_metrics.get("effects", {}).items():
        for metric, values in metrics.items():
            verdict = "significant" if values.get("significant") else "not significant"
            rows.append(
                f"<tr><td>{html.escape(treatment)}</td><td>{html.escape(metric)}</td>"
                f"<td>{percent(values['effect'])}</td>"
                f"<td>[{percent(values['lower'])}, {percent(values['upper'])}]</td>"
                f"<td>{verdict}</td><td>{percent(values['mde'], signed=False)}</td></tr>"
            )
    return "\n".join(rows)


def build_index(pages: list[tuple[str, str]], ab_metrics: dict) -> str:
    links = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(title)}</a></li>' for title, href in pages)
    table = metric_rows(ab_metrics)
    effects = (
        "<h2>A/B effects (percent of control)</h2><table border=1 cellpadding=4>"
        "<tr><th>treatment</th><th>metric</th><th>effect</th><th>interval</th><th></th>"
        "<th>detectable with 80% power</th></tr>"
        f"{table}</table>"
        if table else ""
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>botify-lab reports</title></head><body>"
        "<h1>botify-lab: pipeline reports</h1>"
        f"{effects}<h2>Notebooks</h2><ul>{links}</ul></body></html>\n"
    )


def page_order(notebook: Path) -> tuple[int, str]:
    """Pages in the order the pipeline runs: training, export, simulation, analysis."""
    stages = ("train", "export", "simulate", "ab_analysis")
    rank = next((i for i, stage in enumerate(stages) if notebook.stem.startswith(stage)), len(stages))
    return rank, notebook.stem


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", type=Path, help="folder of executed notebooks to render")
    parser.add_argument("--ab-metrics", type=Path, default=Path("metrics/ab.json"))
    parser.add_argument("--out", type=Path, default=Path("reports/html"))
    args = parser.parse_args(argv)
    ab_metrics = orjson.loads(args.ab_metrics.read_bytes()) if args.ab_metrics.exists() else {}
    with atomic_output_dir(args.out) as scratch:
        pages = []
        for notebook in sorted(args.notebooks.glob("*.ipynb"), key=page_order):
            page = f"{notebook.stem}.html"
            (scratch / page).write_text(notebook_to_html(notebook), encoding="utf-8")
            pages.append((notebook.stem, page))
        (scratch / "index.html").write_text(build_index(pages, ab_metrics), encoding="utf-8")
    print(f"report: {len(pages)} pages and index.html in {args.out}")


if __name__ == "__main__":
    main()
