"""params.yaml is checked against one schema before any stage works: one line per problem, naming the key, the
value and what is allowed, and no traceback."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from botify_lab.pipeline.params import ParamsError, check_params, load_params
from botify_lab.stages.train import training_settings
from tests.conftest import REPO_ROOT

PARAMS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def problems(edit) -> list[str]:
    params = copy.deepcopy(PARAMS)
    edit(params)
    with pytest.raises(ParamsError) as error:
        check_params(params)
    return str(error.value).splitlines()


def test_the_committed_params_follow_the_schema():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.model_dump(exclude_unset=True, by_alias=True) == PARAMS
    assert params.train.splits == PARAMS["train"]["splits"] and params.models["ours"].similarity == "cosine"
    with pytest.raises(ValidationError, match="frozen"):
        params.train.lr = 1.0  # configuration flows from params.yaml, never from code that edits it


def test_every_training_setting_comes_from_params_yaml():
    """The trainer's settings have no defaults of their own: each is a key of the model's section or of `train:`."""
    settings = training_settings("ours", load_params(REPO_ROOT / "params.yaml"))
    assert settings.similarity == PARAMS["models"]["ours"]["similarity"] and settings.lr == PARAMS["train"]["lr"]
    assert settings.splits == tuple(PARAMS["train"]["splits"]) and settings.seed == PARAMS["seed"]


def test_each_problem_is_one_line_naming_key_value_and_what_is_allowed():
    def edit(params):
        params["models"]["ours"]["similarity"] = "cosin"
        params["ab"]["alpha"] = yaml.safe_load("alpha: 0,05")["alpha"]
        params["world"]["genre_sprad"] = 1.0
        params["collect"]["episodes"] = 0

    lines = problems(edit)
    assert len(lines) == 4
    assert "params.yaml: models.ours.similarity = 'cosin': Input should be 'dot', 'cosine' or 'mlp'" in lines
    assert any(line.startswith("params.yaml: ab.alpha = ") for line in lines)
    assert "params.yaml: world.genre_sprad: unknown key (a typo?)" in lines
    assert "params.yaml: collect.episodes = 0: Input should be greater than or equal to 1" in lines


def test_cross_checks_name_the_models():
    lines = problems(lambda params: params["simulate"].update(treatment="nobody"))
    assert lines == [
        "params.yaml: simulate.treatment = 'nobody': must name a model of `models:` or one of `recommenders:` "
        "(contextual, contextual_seminar, ours, first_track, sticky_skip, user_history)"
    ]
    assert problems(lambda params: params["simulate"].update(control="first_track")) == [
        "params.yaml: simulate.control = 'first_track': must name a model of `models:` "
        "(contextual, contextual_seminar, ours)"
    ]
    too_many = problems(lambda params: params["models"]["ours"].update(neighbours=params["world"]["tracks"]))
    assert too_many == [
        "params.yaml: models.ours.neighbours = 50000: a catalog of world.tracks = 50000 has 49999 candidates"
    ]
    assert problems(lambda params: params["train"].update(splits=[0.8, 0.1, 0.2]))[0].startswith(
        "params.yaml: train.splits must sum to 1"
    )
    assert problems(lambda params: params["world"].update(source="course")) == [
        "params.yaml: world.source is 'course', so world.course_dir must name the folder holding the course's "
        "tracks.json and users.json"
    ]
    assert problems(lambda params: params["world"].update(source="upstream"))[0].startswith(
        "params.yaml: world.source = 'upstream': Input should be 'generated', 'listening' or 'course'"
    )


def test_the_schema_checks_the_sweep():
    assert problems(lambda p: p["sweep"]["grid"].update(similarity=["dot", "dot"]))[0].startswith(
        "params.yaml: sweep.grid.similarity = ['dot', 'dot']: each value once"
    )
    assert problems(lambda p: p["sweep"]["grid"].update(loss=[]))[0].startswith("params.yaml: sweep.grid.loss = []")
    assert problems(lambda p: p["sweep"]["grid"].update(similarity=["hyperbolic"]))[0].startswith(
        "params.yaml: sweep.grid.similarity.0 = 'hyperbolic': Input should be 'dot', 'cosine', 'mlp' or 'mlp_sigmoid'"
    )
    assert problems(lambda p: p["sweep"].update(k=PARAMS["models"]["ours"]["neighbours"] + 1)) == [
        f"params.yaml: sweep.k = {PARAMS['models']['ours']['neighbours'] + 1}: the variants export "
        f"models.ours.neighbours = {PARAMS['models']['ours']['neighbours']} tracks per track, so hit rate and NDCG "
        "can look at most that deep"
    ]
    assert problems(lambda p: p["sweep"].update(control="nobody"))[0].startswith(
        "params.yaml: sweep.control = 'nobody': must name a model of `models:`"
    )


def test_recommenders_of_ones_own_name_a_class_and_data_the_pipeline_makes():
    check_params({**copy.deepcopy(PARAMS), "simulate": {**PARAMS["simulate"], "treatment": "first_track"}})
    check_params({**copy.deepcopy(PARAMS), "recommenders": {}})  # none: the course's leaderboard only
    del_section = copy.deepcopy(PARAMS)
    del del_section["recommenders"]
    assert check_params(del_section).recommenders == {}  # an older params.yaml without the section still works

    def edit(params):
        mine = params["recommenders"]["first_track"]
        mine["data"]["neighbours"] = "/home/me/lists.json"
        mine["class"] = "Not A Name"
        params["recommenders"]["ours"] = {"label": "Mine", "file": "mine.txt", "class": "Mine"}

    lines = problems(edit)
    assert "params.yaml: recommenders.first_track.class = 'Not A Name': String should match pattern " in lines[0]
    assert lines[1].startswith("params.yaml: recommenders.ours.file = 'mine.txt': String should match pattern")
    edit_data = problems(lambda params: params["recommenders"]["user_history"]["data"].update(top_tracks="x.json"))
    assert edit_data == [
        "params.yaml: data.top_tracks = 'x.json': a data file must be one the pipeline makes, under data/, "
        "build/recs/, build/toppop/ (so DVC reruns what serves it when it changes)"
    ]
    clash = {"label": "Mine", "file": "mine.py", "class": "Mine"}
    assert problems(lambda params: params["recommenders"].update(ours=clash)) == [
        "params.yaml: ours: a name is either a model of `models:` or one of `recommenders:`"
    ]


def test_rounds_must_follow_each_other_with_string_names():
    """DVC templates a stage per key of collect.rounds and silently drops integer keys, so the schema says so."""
    skipped = problems(lambda params: params["collect"]["rounds"].update(round5={"after": "round4"}))
    assert skipped == [
        "params.yaml: collect.rounds: entry 4 is round5: {after: round4}, expected round4: "
        "{after: round3} (rounds are round1, round2, ... in order, each after the one before)"
    ]
    numbered = problems(lambda params: params["collect"].update(rounds={1: {"after": "round0"}}))
    assert len(numbered) == 1 and numbered[0].startswith("params.yaml: collect.rounds.1")
    assert problems(lambda params: params["collect"].update(serve="nobody")) == [
        "params.yaml: collect.serve = 'nobody': must name a model of `models:` (contextual, contextual_seminar, ours)"
    ]
    assert problems(lambda params: params["collect"].update(exploration=1.0))[0].startswith(
        "params.yaml: collect.exploration = 1.0: Input should be less than 1"
    )
    check_params({**copy.deepcopy(PARAMS), "collect": {**PARAMS["collect"], "rounds": {}}})  # no loop: round 0 only


def test_the_check_stage_fails_in_one_line_per_problem(tmp_path):
    params = copy.deepcopy(PARAMS)
    params["models"]["ours"]["loss"] = "huber"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "botify_lab.pipeline.params",
            "--params",
            str(path),
            "--stamp",
            str(tmp_path / "checked"),
        ],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2 and not (tmp_path / "checked").exists()
    assert completed.stderr.strip() == f"{path}: models.ours.loss = 'huber': Input should be 'mse' or 'mae'"


def test_dvc_exp_run_set_rewrites_only_the_value(tmp_path):
    """`dvc exp run -S key=value` rewrites params.yaml through ruamel: the file is kept in the style it writes, so
    a set changes that one line, and every comment survives."""
    from dvc.utils.serialize import modify_yaml

    path = tmp_path / "params.yaml"
    original = (REPO_ROOT / "params.yaml").read_text()
    path.write_text(original)
    with modify_yaml(path) as params:
        params["models"]["ours"]["similarity"] = "dot"
    changed = [(a, b) for a, b in zip(original.splitlines(), path.read_text().splitlines()) if a != b]
    assert changed == [("    similarity: cosine", "    similarity: dot")]
    assert len(path.read_text().splitlines()) == len(original.splitlines())
