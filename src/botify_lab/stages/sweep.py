"""Stage `sweep`: the homework report's ablation in one table, from every variant's own cached stage.

A variant is the `sweep.base` model with one point of `sweep.grid` (embedding dimension, similarity, loss, learning
rate). Its own stage (`sweep_variant@<variant>`, botify_lab.stages.sweep_variant) trains it on the pairs every model
trains on (build/pairs), exports its neighbours, measures it offline and then online:
- offline: test MSE against the course's two baselines (a random guess, the train mean); hit rate@k and NDCG@k of the
  held-out pairs' well-listened tracks (the test split's pairs with a listen time of at least `relevant_time`) among
  the session's first track's exported neighbours; catalog coverage and same-artist share of those lists;
- online: the course's A/B test against `sweep.control` on seeded traffic served in process. Every variant's test has
  the same experiment name and seed, so the same users land in the same arm with the same first tracks (common
  random numbers): the control arm is the same traffic in every test, and the variants' effects are paired.
Each variant keeps its record (variant.json), its exported lists and its test's config and summary in
build/sweep/<variant>; not the test's log (30 MB per variant: rerun the stage to look at one).

This stage puts the grid's variants in one table, Holm-corrects their p-values across the variants, and
sets each offline metric beside the online effect with its rank correlation (metrics/sweep.json, plots/sweep.csv,
reports/figures/sweep.png).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import orjson
import pandas as pd

from botify_lab.pipeline import layout
from botify_lab.pipeline.outputs import save_figure, write_metrics, write_plot
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params
from botify_lab.pipeline.sweep import VARIANT_RECORD, Variant, grid_variants, rounded
from botify_lab.research import ab

# Table columns the metrics file leaves out per variant: the label (the name says it), the control arm's mean (the
# same traffic in every test, kept once) and the treatment's (the effect says it); plots/sweep.csv keeps them all.
SHARED_COLUMNS = ("label", "control_mean", "treatment_mean")
# Offline metrics set beside the online effect (and whether a larger value is better).
OFFLINE_PREDICTORS = {"mse_vs_train_mean": False, "hit_rate": True, "ndcg": True, "coverage_share": True}


def read_variants(params: Params) -> dict[str, dict]:
    """Every grid variant's record, in grid order, found by its values (whatever DVC named its folder)."""
    wanted = grid_variants(params)
    found = {}
    for path in sorted(layout.SWEEP.glob(f"*/{VARIANT_RECORD}")):
        record = orjson.loads(path.read_bytes())
        values = record["params"]
        variant = Variant(values["embedding_dim"], values["similarity"], values["loss"], values["lr"])
        if variant in wanted:
            found[variant] = record
    missing = [variant.label for variant in wanted if variant not in found]
    if missing:
        raise FileNotFoundError(f"no record in {layout.SWEEP} for {', '.join(missing)}: run `dvc repro` first")
    return {found[variant]["variant"]: found[variant] for variant in wanted}


def rank_correlations(table: pd.DataFrame) -> dict:
    """Spearman's rank correlation of each offline metric with the online effect, across the variants (None where
    fewer than three variants, or a constant column, leave it undefined)."""
    from scipy import stats

    correlations = {}
    for metric, larger_is_better in OFFLINE_PREDICTORS.items():
        pairs = table[[metric, "effect"]].dropna()
        defined = len(pairs) >= 3 and pairs[metric].nunique() > 1 and pairs["effect"].nunique() > 1
        result = stats.spearmanr(pairs[metric], pairs["effect"]) if defined else None
        correlations[metric] = {
            "spearman": rounded(result.statistic) if result else None,
            "p_value": rounded(result.pvalue) if result else None,
            "variants": len(pairs),
            "larger_is_better": larger_is_better,
        }
    return correlations


def sweep_table(records: dict[str, dict], alpha: float) -> pd.DataFrame:
    """One row per variant: its values, offline metrics and online effect on time per session, Holm across them."""
    offline_keys = ("mse_vs_train_mean", "hit_rate", "ndcg", "coverage_share", "same_artist_share")
    online_keys = ("control_mean", "treatment_mean", "effect", "lower", "upper", "p_value")
    rows = []
    for name, record in records.items():
        offline, time = record["offline"], record["online"]["mean_time_per_session"]
        rows.append(
            {
                "variant": name,
                "label": record["label"],
                **{key: record["params"][key] for key in ("embedding_dim", "similarity", "loss", "lr")},
                "test_mse": offline["test"]["model_mse"],
                "train_mean_mse": offline["test"]["train_mean_mse"],
                "random_mse": offline["test"]["random_mse"],
                **{key: offline[key] for key in offline_keys},
                **{key: time[key] for key in online_keys},
            }
        )
    table = pd.DataFrame(rows)
    table["p_holm"] = ab.holm(table["p_value"], alpha).round(6)
    table["significant_holm"] = table["p_holm"] < alpha
    return table


def sweep_document(table: pd.DataFrame, params: Params) -> dict:
    """metrics/sweep.json: what was compared, one entry per variant, and the offline metrics' rank correlations."""
    sweep = params.sweep
    controls = table["control_mean"].unique()
    if len(controls) > 1:
        raise ValueError(f"the control arms of the variants' tests differ ({controls}): their traffic was not the same")
    variants = {}
    for row in table.drop(columns=list(SHARED_COLUMNS)).to_dict("records"):
        name = row.pop("variant")
        variants[name] = {
            key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()
        }
    return {
        "base": sweep.base,
        "control": sweep.control,
        "control_label": params.models[sweep.control].label,
        "control_mean": float(controls[0]),
        "experiment": sweep.experiment,
        "alpha": float(params.ab.alpha),
        "k": sweep.k,
        "metric": "mean_time_per_session",
        "variants": variants,
        "rank_correlations": rank_correlations(table),
    }


def sweep_figure(table: pd.DataFrame, document: dict):
    """Offline against online: each variant's effect (with its interval) over its test MSE relative to the train
    mean, and over its NDCG@k; the rank correlation in each title."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colours = [ab.figure_colour(row.effect, row.significant_holm) for row in table.itertuples()]
    for axis, metric, title in (
        (axes[0], "mse_vs_train_mean", "test MSE / train mean's (lower is better)"),
        (axes[1], "ndcg", f"NDCG@{document['k']} of held-out well-listened pairs"),
    ):
        axis.errorbar(
            table[metric],
            table["effect"],
            yerr=[table["effect"] - table["lower"], table["upper"] - table["effect"]],
            fmt="none",
            ecolor="lightgray",
            capsize=3,
        )
        axis.scatter(table[metric], table["effect"], c=colours, zorder=3)
        for row in table.itertuples():
            axis.annotate(
                row.variant, (getattr(row, metric), row.effect), fontsize=8, xytext=(4, 4), textcoords="offset points"
            )
        axis.margins(x=0.3, y=0.15)
        axis.axhline(0, color="black", linewidth=0.8)
        rho = document["rank_correlations"][metric]["spearman"]
        axis.set(
            title=f"{title}; Spearman {'n/a' if rho is None else f'{rho:+.2f}'}",
            xlabel=metric,
            ylabel=f"time per session vs {document['control_label']}, %",
        )
    figure.tight_layout()
    return figure


def write_sweep(params: Params) -> dict:
    """metrics/sweep.json, plots/sweep.csv and reports/figures/sweep.png from the variants' records."""
    import matplotlib

    matplotlib.use("Agg")
    table = sweep_table(read_variants(params), float(params.ab.alpha))
    document = sweep_document(table, params)
    write_metrics("sweep", document)
    write_plot("sweep", table)
    save_figure(sweep_figure(table, document), "sweep")
    for row in table.sort_values("effect", ascending=False).itertuples():
        print(
            f"{row.label:>34}: test MSE {row.test_mse:.4f}, NDCG@{document['k']} {row.ndcg}, "
            f"{row.effect:+6.1f}% [{row.lower:+.1f}, {row.upper:+.1f}], Holm p = {row.p_holm:.3g}"
        )
    return document


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    write_sweep(load_params(parser.parse_args(argv).params))


if __name__ == "__main__":
    main()
