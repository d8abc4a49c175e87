"""The fidelity stage: Random and StickyArtist served through the real service at each gamma, the statistics of
the logs beside the real ones; and the in-process engine of the knob search agrees with the service."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from botify_lab.inprocess import world_checks
from botify_lab.pipeline import reference
from botify_lab.research import fidelity as F
from botify_lab.stages import fidelity
from botify_lab.tools import world_search
from sim.generator import generate_world, world_arrays
from sim.loader import load_world, world_from_arrays
from tests.conftest import REPO_ROOT, repo_params
from tests.sim.test_generator_fidelity import fitted_knobs

SIZES = dict(seed=1, n_tracks=3000, n_users=300, dim=16)


@pytest.fixture(scope="module")
def real_stats_path():
    """The committed statistics: the stage needs nothing beside the repository."""
    return world_checks.COMMITTED_REAL_STATS


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fidelity-world")
    generate_world(folder, **SIZES, **fitted_knobs())
    return folder


def test_gamma_world_sets_every_users_gamma(world, tmp_path):
    copy = fidelity.gamma_world(world, 0.9, tmp_path / "g")
    users = [orjson.loads(line) for line in (copy / "users.json").open("rb")]
    assert len(users) == SIZES["n_users"] and {u["artist_discount_gamma"] for u in users} == {0.9}
    loaded = load_world(copy)
    assert np.all(loaded.users.artist_discount_gamma == 0.9)
    assert (copy / "tracks.npy").read_bytes() == (world / "tracks.npy").read_bytes()


@pytest.mark.timeout(180)
def test_the_stage_through_the_service(world, tmp_path, real_stats_path):
    params = repo_params(
        {
            "seed": 5,
            "http": {"connections": 2},
            "train": {"splits": [0.8, 0.1, 0.1]},
            "fidelity": {
                "seeds": 1,
                "gammas": [{"gamma": 0.9, "episodes": 120}, {"gamma": 0.8, "episodes": 80}],
                "processes": 1,
                "transport": "http",
                "top_pop_seeds": 1,
                "top_pop_episodes": 200,
                "reference_episodes": 80,
                "contextual_episodes": 80,
            },
        }
    )
    stand_in = reference.write_reference_recommendations(world, tmp_path / "stand_in.json")
    absent = tmp_path / "absent"
    result = fidelity.run(
        params,
        world,
        real_stats=real_stats_path,
        training_pairs_dir=absent,
        course_contextual_recs=stand_in,
        reference_recs=stand_in,
    )
    table = result.table
    assert set(table["group"]) >= {
        "Random gamma=0.9",
        "Random gamma=0.8",
        "StickyArtist gamma=0.9",
        "StickyArtist gamma=0.8 (published)",
        "TOP_POP T2 TopPop(100)",
    }
    for name in ("Random gamma=0.9", "StickyArtist gamma=0.8"):
        assert len(result.simulated[name]) == 1
    sticky = result.simulated["StickyArtist gamma=0.9"][0]
    assert sticky["share_same_artist_as_previous"] == 1.0  # StickyArtist served what it should, through the service
    assert result.simulated["Random gamma=0.9"][0]["share_same_artist_as_previous"] < 0.2
    # gamma is in force: no fresh same-artist track above gamma ** n
    assert sticky["listen_time_hist"]["1.0"] == 0.0 and sticky["listen_time_hist"]["(0.9,1.0)"] == 0.0
    metrics = fidelity.write_outputs(result, tmp_path / "fidelity.json", tmp_path / "statistics.json")
    assert metrics["checks"] == len(table) and metrics["training_data"] is None
    assert set(metrics["reference_true_neighbours"]) == {"Random", reference.REFERENCE_LABEL}
    assert json.loads((tmp_path / "fidelity.json").read_text())["failed"] == metrics["failed"]
    figure = fidelity.fidelity_figure(result, "StickyArtist")
    assert len(figure.axes) == 4
    contextual = table[table["group"] == fidelity.COURSE_CONTEXTUAL_GROUP].set_index("statistic")
    assert list(contextual.index) == ["time per session / Random", "hist 0", "hist 1.0", "mean listen (recommended)"]
    per_session = "mean_time_per_session_user_level"
    ratio = (
        result.simulated[fidelity.COURSE_CONTEXTUAL_GROUP][0][per_session]
        / result.simulated[fidelity.RANDOM_BESIDE_CONTEXTUAL_GROUP][0][per_session]
    )
    assert contextual.loc["time per session / Random", "simulated"] == pytest.approx(ratio)
    assert contextual.loc["time per session / Random", "real_range"] == [2.30, 2.61]
    assert contextual.loc["mean listen (recommended)", "real"] == pytest.approx(0.4414, abs=1e-4)
    products = metrics["hidden_inner_products"]
    embeddings = np.load(world / "tracks.npy").astype(np.float64)
    assert products["pairs"] == fidelity.INNER_PRODUCT_PAIRS and products["course"]["share_negative"] == 0.55
    assert products["min"] >= -(np.linalg.norm(embeddings, axis=1).max() ** 2)
    assert products["percentiles"]["p1"] < products["percentiles"]["p50"] < products["percentiles"]["p99"]
    assert 0.0 < products["share_negative"] < 1.0
    assert fidelity.inner_product_figure(result).axes[0].get_title().startswith("hidden embeddings, 200,000 random")


def test_in_process_engine_matches_the_world_loader(world):
    """The search's in-memory world plays like the world folder: same statistics for the same episodes."""
    arrays = world_arrays(**SIZES, **fitted_knobs())
    in_memory = world_from_arrays(arrays, gamma=0.9)
    from_files = load_world(world, verify=False).with_gamma(0.9)
    sticky = world_checks.StickyArtistBatch(in_memory.track_artist)
    a = world_checks.play_rows(in_memory, sticky, 3, 200)
    b = world_checks.play_rows(from_files, world_checks.StickyArtistBatch(from_files.track_artist), 3, 200)
    assert a[["session", "position", "time"]].equals(b[["session", "position", "time"]])
    stats = F.statistics(a, track_artist=in_memory.track_artist, gamma=0.9)
    assert stats["share_same_artist_as_previous"] == 1.0 and stats["sessions"] == 200


def test_first_track_ceiling_is_exact_and_sees_how_low_rank_a_world_is():
    """All of the listen time is learnable when each first track comes from one interest and every user has the same
    bias and sharpness; a world of two taste directions holds its interaction in a few directions, a world of random
    directions spreads it."""
    rng = np.random.default_rng(0)

    def world_of(embeddings, interests, bias, neighbours):
        users = len(interests)
        arrays = {
            "embeddings": embeddings,
            "track_artist": np.arange(len(embeddings)),
            "interests": np.asarray(interests).reshape(users, -1),
            "consume_bias": np.full(users, bias) if np.isscalar(bias) else bias,
            "consume_sharpness": np.ones(users),
        }
        return world_checks.first_track_ceiling(world_from_arrays(arrays, interest_neighbours=neighbours), tracks=300)

    unit = rng.standard_normal((400, 16))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)  # each track is its own nearest: one interest per first track
    exact = world_of(unit, rng.permutation(400)[:200], 0.0, 1)
    assert exact["ceiling_share_of_variance"] == pytest.approx(1.0, abs=1e-3)

    biases = rng.uniform(0, 10, 300)
    two_directions = np.repeat(np.eye(16)[:2], 200, axis=0) * rng.uniform(1, 4, (400, 1))
    tastes = two_directions + 0.05 * rng.standard_normal((400, 16))
    two = world_of(tastes, rng.integers(400, size=(300, 3)), biases, 10)
    spread = world_of(2 * rng.standard_normal((400, 64)), rng.integers(400, size=(300, 3)), biases, 10)
    for found in (two, spread):
        assert 0 < found["track_alone_share_of_variance"] < found["ceiling_share_of_variance"] < 1
    assert two["interaction_energy_in_top_dims"]["10"] > 0.95
    assert spread["interaction_energy_in_top_dims"]["10"] < two["interaction_energy_in_top_dims"]["10"] - 0.3


def test_true_neighbours_are_the_nearest_other_tracks():
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((300, 6))
    table = reference.true_neighbours(embeddings, 10)
    scores = embeddings @ embeddings.T
    np.fill_diagonal(scores, -np.inf)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert table.shape == (300, 10) and (table != np.arange(300)[:, None]).all()
    assert np.array_equal(np.sort(table, axis=1), np.sort(expected, axis=1))


def test_training_summary_of_a_log(tmp_path):
    from botify_lab.research.logs import read_log, training_pairs
    from botify_lab.stages.pairs import Pairs, save_pairs
    from tests.research.research_helpers import event, write_log

    rows = []
    for user in range(40):
        times = [1.0, 0.0, 1.0, 0.5, 0.0]
        for i, time in enumerate(times):
            last = i == len(times) - 1
            rows.append(
                event(
                    "last" if last else "next",
                    1000 * user + i,
                    user,
                    user * 10 + i,
                    time,
                    recommendation=None if last else user * 10 + i + 1,
                )
            )
    log = write_log(tmp_path / "log" / "data.json", rows)
    found = Pairs(["round0"], len(rows), training_pairs(read_log(log.parent)))
    pairs_dir = save_pairs(found, tmp_path / "pairs")
    summary = fidelity.training_summary(pairs_dir, repo_params({"seed": 0, "train": {"splits": [0.8, 0.1, 0.1]}}))
    assert summary["pairs"] == 160 and summary["variance"] == pytest.approx(np.var([0.0, 1.0, 0.5, 0.0]))
    assert summary["course"]["train_mean_mse"] == [0.145, 0.154] and "variance" not in summary["course"]


def test_search_candidates_and_best():
    import pandas as pd

    search = {
        "points": {"old": {"track_spread": 0.5}},
        "sweeps": {"genre_spread": [1.0, 1.9]},
        "grid": {"artist_spread": [3.5, 4.1], "track_spread": [0.5, 1.9]},
    }
    found = world_search.candidates(search)
    assert found[0] == ("base", {}) and found[1] == ("point old", {"track_spread": 0.5})
    assert len(found) == 1 + 1 + 2 + 4
    assert len(world_search.candidates({**search, "sweeps": {"track_spread": [0.5]}})) == 1 + 1 + 4  # repeat dropped
    table = pd.DataFrame({"family": ["a", "b", "c"], "failed": [1, 0, 0], "worst": [0.5, 0.9, 0.8]})
    assert world_search.best_candidate(table)["family"] == "c"


def test_complete_runs_take_the_survivors_with_their_knobs_typed_as_params_yaml_types_them(tmp_path):
    """`make world-choose` runs only the candidates that passed every in-process check, best first, and writes each
    one's knobs into the clone's `world:` section (integers stay integers: the search table stores them as floats)."""
    import pandas as pd

    from botify_lab.pipeline.params import load_params

    table = pd.DataFrame(
        {
            "family": ["base", "point a", "point b", "sweep scale"],
            "failed": [0, 2, 0, 0],
            "worst": [1.0, 0.5, 0.9, 0.95],
            "listeners": [30000.0, 10000.0, 10000.0, 30000.0],
            "epochs": [2.0, 5.0, 5.0, 2.0],
            "scale": [1.75, 1.5, 1.58, 1.7],
            "genre_spread": [9.0, 9.0, 9.0, 9.0],  # a catalog-tree knob: not the listening source's
        }
    )
    assert world_search.survivors(table, 2)["family"].tolist() == ["point b", "sweep scale"]
    assert world_search.survivors(table, 5)["family"].tolist() == ["point b", "sweep scale", "base"]
    world = load_params(REPO_ROOT / "params.yaml").world.model_dump()
    chosen = world_search.candidate_world(world, table.iloc[2])
    assert chosen["listening"] == {**world["listening"], "listeners": 10000, "epochs": 5, "scale": 1.58}
    assert type(chosen["listening"]["listeners"]) is int and chosen["genre_spread"] == world["genre_spread"]
    assert world["listening"]["listeners"] != 10000  # the params' own section is left as it was
    tree = world_search.candidate_world({**world, "source": "generated"}, table.iloc[2])
    assert tree["genre_spread"] == 9.0 and tree["listening"] == world["listening"]
    with pytest.raises(ValueError, match="no candidate of the search passed every in-process check"):
        world_search.choose_worlds(table[table["failed"] > 0], world, 3, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing was cloned


def test_a_complete_run_clones_sets_the_knobs_builds_the_world_and_reads_the_fidelity_stage(tmp_path, monkeypatch):
    """The commands a complete run gives (clone, `make world`'s, `dvc repro fidelity`), the knobs its clone's
    params.yaml carries, and its row: counts, the failing checks, the Contextual and training-data values."""
    import json
    import subprocess

    import pandas as pd
    import yaml

    from botify_lab.pipeline.params import load_params

    commands = []

    def fake_run(arguments, cwd=None, **kwargs):
        commands.append(arguments[arguments.index("botify_lab.pipeline.bootstrap") + 1 :] if cwd else arguments[:2])
        if arguments[:2] == ["git", "clone"]:
            Path(arguments[-1]).mkdir()
            (Path(arguments[-1]) / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
        elif arguments[-1] == "fidelity":
            checks = [
                {"group": "Random gamma=0.9", "statistic": "hist 0", "simulated": 0.44, "passed": True},
                {"group": "Contextual-2023 gamma=0.8", "statistic": "hist 1.0", "simulated": 0.1, "passed": False},
                {
                    "group": "Training data (week 4)",
                    "statistic": "listen-time variance",
                    "simulated": 0.15,
                    "passed": True,
                },
            ]
            (cwd / "build" / "fidelity").mkdir(parents=True)
            (cwd / "build" / "fidelity" / "checks.json").write_text(json.dumps(checks))
            worst = {"distance": 2.5, "check": "Contextual-2023 gamma=0.8 | hist 1.0"}
            (cwd / "metrics").mkdir()
            (cwd / "metrics" / "fidelity.json").write_text(json.dumps({"checks": 3, "failed": 1, "worst": worst}))
        return subprocess.CompletedProcess(arguments, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    world = load_params(REPO_ROOT / "params.yaml").world.model_dump()
    table = pd.DataFrame({"family": ["point b"], "failed": [0], "worst": [0.9], "epochs": [5.0], "scale": [1.58]})
    logged = []
    ranked = world_search.choose_worlds(table, world, 3, tmp_path, out=tmp_path / "choice.csv", log=logged.append)
    assert commands == [["git", "clone"], ["world"], ["repro", "fidelity"]]
    written = yaml.safe_load((tmp_path / "point-b-1-58" / "params.yaml").read_text())["world"]["listening"]
    assert written == {**world["listening"], "epochs": 5, "scale": 1.58}
    row = ranked.iloc[0]
    assert (row["passed"], row["failed"], row["failing"]) == (2, 1, "Contextual-2023 gamma=0.8 | hist 1.0")
    assert row["Training data (week 4) | listen-time variance"] == 0.15 and row["epochs"] == 5 and row["scale"] == 1.58
    assert pd.read_csv(tmp_path / "choice.csv")["family"].tolist() == ["point b"]
    assert "2 of 3 checks pass" in logged[-1]


def test_the_listening_search_refits_only_when_a_knob_besides_scale_changes(monkeypatch):
    import yaml

    import sim.listening
    from botify_lab.pipeline.params import check_params

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["world"]["source"] = "listening"
    raw["world"].update(tracks=1500, users=100)
    raw["world"]["listening"].update(listeners=300, communities=6, epochs=2)
    raw["fidelity_search"]["listening"] = {"points": {}, "sweeps": {"scale": [2.0, 6.0]}, "grid": {"epochs": [3]}}
    params = check_params(raw)
    base, search = world_search.search_base(params)
    assert base["listening"]["scale"] == params.world.listening.scale and "genre_spread" not in base["shared"]
    fits = []
    real_fit = sim.listening.listening_world_arrays
    monkeypatch.setattr(sim.listening, "listening_world_arrays", lambda **kw: fits.append(kw) or real_fit(**kw))
    build = world_search.candidate_builder(base)
    found = {family + str(overrides): build(overrides) for family, overrides in world_search.candidates(search)}
    assert len(found) == 4 and len(fits) == 2  # base, scale 2 and 6 share one fit; epochs 3 is the second
    embeddings = [arrays["embeddings"] for arrays in found.values()]
    assert np.allclose(embeddings[1] * 3.0, embeddings[2], rtol=1e-6)
    assert yaml.safe_dump(world_search.flat_knobs(base))  # one level of knobs for the table
    raw["fidelity_search"]["listening"] = None
    with pytest.raises(ValueError, match="fidelity_search.listening must list its candidates"):
        world_search.search_base(check_params(raw))


@pytest.mark.timeout(300)
def test_the_stage_runs_on_the_course_world(upstream_world, tmp_path, real_stats_path):
    """`world.source: course`: the course's own catalog and users, played through the service like the real logs."""
    from sim.generator import course_world

    course_world(upstream_world, tmp_path / "world", seed=0, dim=16, **fitted_knobs())
    params = repo_params(
        {
            "seed": 7,
            "http": {"connections": 2},
            "train": {"splits": [0.8, 0.1, 0.1]},
            "fidelity": {
                "seeds": 1,
                "gammas": [{"gamma": 0.9, "episodes": 100}, {"gamma": 0.8, "episodes": 60}],
                "processes": 1,
                "transport": "http",
                "top_pop_seeds": 1,
                "top_pop_episodes": 150,
                "reference_episodes": 60,
                "contextual_episodes": 0,
            },
        }
    )
    absent = tmp_path / "absent"
    result = fidelity.run(params, tmp_path / "world", real_stats=real_stats_path, training_pairs_dir=absent)
    sticky = result.simulated["StickyArtist gamma=0.9"][0]
    assert sticky["share_same_artist_as_previous"] == 1.0  # StickyArtist served through the service
    random = result.simulated["Random gamma=0.9"][0]
    assert 0.3 < random["share_time_zero"] < 0.6  # all-or-nothing listening, as in the real logs
    assert sticky["mean_time_per_session_user_level"] > random["mean_time_per_session_user_level"]
    assert len(result.table) > 40 and result.table["real"].notna().all()
