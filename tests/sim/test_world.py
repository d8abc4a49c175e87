"""World generation (deterministic, atomic, structured) and loading (ours and the course's files)."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import orjson
import pytest
import yaml

from sim.generator import generate_world
from sim.loader import load_world
from sim.run import simulate
from sim.settings import KNOBS
from sim.world import DATA_FILES, WorldError, nearest_by_inner_product

from .conftest import DEFAULT_KNOBS, PARAMS, SMALL, write_world


def test_same_arguments_give_byte_identical_files(tmp_path, small_world):
    meta = generate_world(tmp_path, **SMALL)
    for name in DATA_FILES + ("world.json",):
        assert (tmp_path / name).read_bytes() == (small_world / name).read_bytes(), name
        assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind
    for name in DATA_FILES:
        assert meta["files"][name] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert meta["parameters"]["n_tracks"] == 2000 and meta["parameters"]["seed"] == 1


def test_other_seed_gives_another_world(tmp_path, small_world):
    generate_world(tmp_path, **{**SMALL, "seed": 2})
    assert (tmp_path / "tracks.npy").read_bytes() != (small_world / "tracks.npy").read_bytes()


def test_course_file_formats_and_user_parameters(small_world):
    tracks = [orjson.loads(line) for line in (small_world / "tracks.json").read_bytes().splitlines()]
    users = [orjson.loads(line) for line in (small_world / "users.json").read_bytes().splitlines()]
    assert [row["track"] for row in tracks] == list(range(2000))
    assert set(tracks[0]) == {"artist", "title", "track"} and tracks[0]["artist"][0].isupper()
    assert set(users[0]) == {"user", "interests", "consume_bias", "consume_sharpness"}
    assert all(len(set(u["interests"])) == 3 for u in users)
    bias = np.array([u["consume_bias"] for u in users])
    sharpness = np.array([u["consume_sharpness"] for u in users])
    assert 0 <= bias.min() and bias.max() <= 10
    assert np.all(((sharpness >= 1) & (sharpness <= 2)) | ((sharpness >= 0.5) & (sharpness <= 1)))
    assert 0.3 < np.mean(sharpness < 1) < 0.7  # s = -1 or +1 with equal chance
    embeddings = np.load(small_world / "tracks.npy", allow_pickle=False)
    assert embeddings.dtype == np.float32 and embeddings.shape == (2000, 16)


def test_world_has_music_structure(small_world):
    world = load_world(small_world)
    sizes = np.bincount(world.track_artist)
    assert sizes.max() >= 8 * np.median(sizes)  # skewed catalog sizes
    e = world.embeddings / np.linalg.norm(world.embeddings, axis=1, keepdims=True)
    generator = np.random.default_rng(0)
    a, b = generator.integers(0, 2000, size=(2, 4000))
    same = world.track_artist[a] == world.track_artist[b]
    pairs = np.array(
        [
            (i, j)
            for artist in np.nonzero(sizes > 1)[0][:200]
            for i, j in [tuple(np.nonzero(world.track_artist == artist)[0][:2])]
        ]
    )
    same_artist_cos = np.mean(np.sum(e[pairs[:, 0]] * e[pairs[:, 1]], axis=1))
    random_cos = np.mean(np.sum(e[a[~same]] * e[b[~same]], axis=1))
    assert same_artist_cos > random_cos + 0.3
    # Interests follow popularity, which is strongly skewed: a few tracks are many users' interests.
    interest_counts = np.bincount(world.users.interests, minlength=2000)
    assert np.sort(interest_counts)[::-1][:20].sum() > 0.1 * interest_counts.sum()


def test_loader_rejects_changed_missing_and_mismatched_files(tmp_path, small_world):
    broken = tmp_path / "w"
    shutil.copytree(small_world, broken)
    with open(broken / "users.json", "ab") as handle:
        handle.write(b'{"user": 999999, "interests": [1]}\n')
    with pytest.raises(WorldError, match="sha256"):
        load_world(broken)
    (broken / "world.json").unlink()
    assert load_world(broken).n_users == 201  # course-style folder without world.json
    np.save(broken / "tracks.npy", np.zeros((1999, 16), dtype=np.float32))
    with pytest.raises(WorldError, match="1999 rows but tracks.json has 2000"):
        load_world(broken)
    (broken / "tracks.npy").unlink()
    with pytest.raises(WorldError, match="missing tracks.npy"):
        load_world(broken)
    with pytest.raises(WorldError, match="does not exist"):
        load_world(tmp_path / "nowhere")


def test_loader_rejects_bad_ids_and_interests_naming_file_and_line(tmp_path):
    one = {"interest_neighbours": 1}
    write_world(
        tmp_path,
        ["a", "b"],
        [[1.0], [2.0]],
        [{"user": 0, "interests": [0], **one}, {"user": 1, "interests": [5], **one}],
    )
    with pytest.raises(WorldError, match=r"users\.json:2: user 1 has interests outside the catalog"):
        load_world(tmp_path)
    (tmp_path / "users.json").write_bytes(b'{"user": 0, "interests": [1], "interest_neighbours": 1}\n{"user": 1\n')
    with pytest.raises(WorldError, match=r"users\.json:2: not valid JSON"):
        load_world(tmp_path)
    (tmp_path / "tracks.json").write_bytes(
        b'{"artist": "a", "title": "t", "track": 3}\n{"artist": "b", "title": "u", "track": 1}\n'
    )
    with pytest.raises(WorldError, match=r"tracks\.json: track ids must be 0\.\.3; id 0 is missing"):
        load_world(tmp_path)
    (tmp_path / "tracks.json").write_bytes(b'{"artist": "a", "title": "t", "track": 0}\n{"artist": "b", "track": 1}\n')
    with pytest.raises(WorldError, match=r"tracks\.json:2: a catalog row needs string `artist` and `title`"):
        load_world(tmp_path)
    (tmp_path / "tracks.json").unlink()
    with pytest.raises(WorldError, match="missing tracks.json"):
        load_world(tmp_path)


def test_course_files_run_with_any_50000_row_embedding(upstream_world, tmp_path):
    for name in ("tracks.json", "users.json"):
        shutil.copy(upstream_world / name, tmp_path / name)
    np.save(tmp_path / "tracks.npy", np.random.default_rng(0).normal(0, 0.5, (50_000, 8)).astype(np.float32))
    world = load_world(tmp_path)
    assert world.n_tracks == 50_000 and world.n_users == 10_000
    summary = simulate(world, agent="random", episodes=200, seed=3, progress=False)
    assert summary["total"]["episodes"] == 200 and summary["total"]["steps"] >= 200 * 5


def test_generator_needs_every_knob_and_rejects_unknown_ones(tmp_path):
    sizes = dict(seed=0, n_tracks=100, n_users=10, dim=4)
    with pytest.raises(TypeError, match="unknown world knobs: \\['genre'\\]"):
        generate_world(tmp_path, **sizes, **DEFAULT_KNOBS, genre=3)
    partial = {name: value for name, value in DEFAULT_KNOBS.items() if name not in ("genres", "interests")}
    with pytest.raises(TypeError, match="missing world knobs: \\['genres', 'interests'\\]"):
        generate_world(tmp_path, **sizes, **partial)
    with pytest.raises(ValueError, match="genres must be an integer"):
        generate_world(tmp_path, **sizes, **{**DEFAULT_KNOBS, "genres": 2.5})
    assert not (tmp_path / "world.json").exists()


def test_params_world_section_lists_every_setting_in_world_json_order(tmp_path):
    """world.json's `parameters` follow the knob table's order and types, whatever the caller's order or types."""
    section = yaml.safe_load(PARAMS.read_text())["world"]
    assert list(section) == ["source", "course_dir", "seed", "tracks", "users", "dim", *KNOBS, "listening"]
    shuffled = dict(reversed(list(DEFAULT_KNOBS.items())))
    shuffled.update(artist_spread=1, genres=5.0)  # an int for a float knob, a float for an int knob
    meta = generate_world(tmp_path, seed=0, n_tracks=300, n_users=20, dim=4, **shuffled)
    assert list(meta["parameters"]) == ["seed", "n_tracks", "n_users", "dim", *KNOBS]
    written = (tmp_path / "world.json").read_text()
    assert '"artist_spread": 1.0,' in written and '"genres": 5,' in written


def test_nearest_neighbours_are_exact_with_ties_to_the_smaller_id(small_world):
    world = load_world(small_world)
    embeddings = world.embeddings.copy()
    query = int(np.argmax(np.linalg.norm(embeddings, axis=1)))  # a long vector is among its own nearest
    embeddings[[10, 20, 30]] = embeddings[query]  # exact ties
    queries = np.array([query, 7, 1999, 0])
    table = nearest_by_inner_product(embeddings, queries, 10, block=3)
    scores = embeddings[queries] @ embeddings.T
    expected = np.array([np.lexsort((np.arange(2000), -row))[:10] for row in scores])
    np.testing.assert_array_equal(table, expected)
    tied = [t for t in table[0].tolist() if t in (query, 10, 20, 30)]
    assert tied == sorted(tied) and len(tied) == 4


def test_neighbour_lists_are_shared_by_every_world_over_the_same_embeddings(small_world, monkeypatch):
    """Gamma twins and a second load of the same folder share one set of lists, whichever prepares first: each
    interest's list is computed at most once per process (other tests may have computed some already) and is always
    the exact one."""
    import sim.world

    computed = []

    def counted(embeddings, queries, k):
        computed.extend(queries.tolist())
        return nearest_by_inner_product(embeddings, queries, k)

    monkeypatch.setattr(sim.world, "nearest_by_inner_product", counted)
    world = load_world(small_world)
    early_twin = world.with_gamma(0.5)
    world.prepare_neighbours(np.array([3, 7]))
    late_twin = world.with_gamma(0.7)
    early_twin.prepare_neighbours(np.array([7, 11]))
    again = load_world(small_world)
    width = int(world.users.interest_neighbours.max())
    exact = nearest_by_inner_product(world.embeddings, np.array([3, 7, 11, 19]), width)
    for each in (world, early_twin, late_twin, again):
        assert each.neighbours is world.neighbours
        assert np.array_equal(each.neighbour_lists(np.array([3, 7, 11, 19])), exact)
        assert np.array_equal(each.first_track_candidates(11, 4), exact[2, :4])
    assert len(computed) == len(set(computed)) and set(computed) <= {3, 7, 11, 19}


def test_data_dvc_records_the_world_of_todays_params_and_code():
    """data.dvc's meta says what its world was built from (`make world` writes it): params.yaml's world: section,
    every file of the simulator the build loaded, the kernel pin and requirements.txt. All unchanged means a fresh
    clone's `make repro` rebuilds exactly the recorded world: the build is deterministic (the listening world's
    bytes are pinned by test_listening, and a fresh clone's make repro checks the full world's hash). This replaces
    building the full world here, a 3-minute LightFM fit."""
    from botify_lab.pipeline.world import changed_world_inputs

    changed = changed_world_inputs(PARAMS.parent)
    assert not changed, f"data.dvc's world was built from other inputs ({changed}): run `make world`, commit data.dvc"


def test_a_changed_world_input_is_named(tmp_path):
    """The record catches a changed world: section and a changed line of the simulator's code."""
    import shutil

    from botify_lab.pipeline.world import changed_world_inputs

    root = PARAMS.parent
    for name in ("params.yaml", "data.dvc", "requirements.txt"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "sim", tmp_path / "sim", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "src/botify_lab").mkdir(parents=True)
    shutil.copy(root / "src/botify_lab/kernels.py", tmp_path / "src/botify_lab/kernels.py")
    before = set(changed_world_inputs(tmp_path))  # empty unless the repository's own record is stale (test above)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["world"]["seed"] += 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with open(tmp_path / "sim/listening.py", "a") as handle:
        handle.write("# an edit\n")
    assert set(changed_world_inputs(tmp_path)) == before | {"world_section", "sim/listening.py"}
