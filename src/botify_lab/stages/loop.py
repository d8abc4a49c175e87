"""Stage `loop@roundN`: one day of the course's loop of days (serve, collect, retrain, serve again).

Round N fits the model `collect.serve` names on the logs of the rounds before it (all of them, or the last
`collect.window`), exports its neighbours, and serves them as one arm (`collect.exploration` of its requests
answered by Random) to the next `collect.days` days of the collection's seeded traffic: the same users' next days on
the same simulated clock, in process or over HTTP as `collect.transport` says. Its folder keeps the log, the served
lists, the fit's training record and `round.json` (what was served and how the traffic went).

The course's 2023 recipe learns from such logs far better than from the first round's alone; this stage is also
where the feedback loop shows: what a model learns from traffic it shaped itself.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from botify_lab.pipeline import layout
from botify_lab.pipeline.experiment import Traffic, run_experiment
from botify_lab.pipeline.outputs import atomic_output_dir, show_progress, write_json
from botify_lab.pipeline.params import PARAMS_FILE, Params, load_params, round_first_day, training_rounds
from botify_lab.pipeline.rounds import describe_round, round_summary
from botify_lab.research.catalog import read_catalog
from botify_lab.research.export import same_artist_share, top_k_neighbours, write_track_recommendations
from botify_lab.research.logs import read_log
from botify_lab.stages.pairs import save_round_pairs
from botify_lab.stages.train import fit_on_rounds, training_record

MODEL_SUMMARY_KEYS = ("best_epoch", "sizes", "test")


def run_round(round_name: str, params: Params, world_dir: Path = layout.WORLD) -> Path:
    """Fit, export and serve round `round_name` (round1, round2, ...); returns its folder."""
    settings = params.collect
    if round_name not in settings.rounds:
        have = ", ".join(settings.rounds) or "none"
        raise ValueError(f"no round {round_name!r} in collect.rounds (have {have})")
    name, model = settings.serve, params.models[settings.serve]
    catalog_path = Path(world_dir) / "tracks.json"
    catalog = read_catalog(catalog_path)
    read = training_rounds(params, before=round_name)
    out_dir = layout.round_dir(round_name)
    with atomic_output_dir(out_dir) as scratch:
        print(f"{round_name}: fitting {name} on the logs of {', '.join(read)}", flush=True)
        fit = fit_on_rounds(name, params, read, len(catalog))
        write_json(scratch / "models" / name / "training.json", training_record(name, read, fit), sort_keys=True)
        neighbours = top_k_neighbours(
            fit.result.model,
            model.neighbours,
            exclude_self=model.exclude_self,
            progress=show_progress(),
        )
        # Beside service.yaml in the same folder, so the config's relative path holds once the scratch folder
        # becomes the round's folder.
        recs = write_track_recommendations(catalog_path, neighbours, scratch / "recs" / f"{name}.json")
        headline = fit.result.headline()
        served = {
            "name": name,
            "rounds": read,
            "listen_time_variance": round(float(fit.pairs["time"].var(ddof=0)), 6),
            **{key: headline[key] for key in MODEL_SUMMARY_KEYS},
            "same_artist_share_of_lists": round(same_artist_share(neighbours, catalog["artist"].to_numpy()), 6),
        }
        arm = {"name": name, "recommender": "contextual", "path": recs, "exploration": float(settings.exploration)}
        traffic = Traffic.from_params(settings, params)
        traffic = dataclasses.replace(traffic, first_day=round_first_day(params, round_name))
        print(f"{round_name}: serving {name} from day {traffic.first_day}", flush=True)
        run_experiment(world_dir, [{"name": settings.experiment, "arms": [arm]}], traffic, scratch)
        events = read_log(scratch / "log")
        summary = round_summary(round_name, params, events, catalog, served)
        write_json(scratch / layout.ROUND_SUMMARY, summary, sort_keys=True)
        save_round_pairs(events, scratch)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("round", help="the round to run: round1, round2, ... (a key of collect.rounds)")
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    args = parser.parse_args(argv)
    out_dir = run_round(args.round, load_params(args.params))
    print(f"{args.round}: {describe_round(out_dir)}")


if __name__ == "__main__":
    main()
