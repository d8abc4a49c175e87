"""The command line and config checks: help, the startup line, clear errors for configs that cannot run."""

import re
import signal
import subprocess
import sys

import pytest
import requests
import yaml

from botify import create_app
from botify.catalog import DataFileError
from botify.config import ConfigError, load_config
from botify.launch import ServiceFailed, served
from botify_lab.formats import FormatError, assign_arm


def run_botify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "botify", *args], capture_output=True, text=True, timeout=60)


def test_help_explains_the_serve_options():
    help_text = run_botify("serve", "--help").stdout
    for option in ("--config", "--host", "--port", "--workers", "127.0.0.1", "SIGTERM"):
        assert option in help_text


def test_assignment_matches_the_published_vectors():
    assert assign_arm("TOP_POP", 4, 5533) == 0  # C
    assert assign_arm("TOP_POP", 4, 7121) == 3  # T3


def test_startup_line_names_catalog_experiments_and_url(write_config, world, tmp_path):
    config = write_config([world.top_pop_experiment()])
    with served(config) as url:
        assert requests.get(f"{url}/").status_code == 200
    # The same line, read from a foreground run stopped by SIGINT.
    process = subprocess.Popen(
        [sys.executable, "-m", "botify", "serve", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 0
    process.stdout.close()
    assert "500 tracks" in line and "TOP_POP(C=random, T1=toppop, T2=toppop, T3=toppop)" in line
    assert "serving at http://127.0.0.1:" in line


def test_config_paths_resolve_against_the_config_folder(write_config, world, tmp_path):
    config = load_config(write_config([world.top_pop_experiment()]))
    assert config.catalog == world.path / "tracks.json"
    assert config.log_dir == tmp_path / "log"
    assert [arm.name for arm in config.experiments[0].arms] == ["C", "T1", "T2", "T3"]


def test_explicit_arm_names_and_dict_configs(world, tmp_path, monkeypatch, open_app):
    monkeypatch.chdir(tmp_path)
    app = open_app(
        {
            "catalog": str(world.path / "tracks.json"),
            "experiments": [
                {
                    "name": "E",
                    "arms": [
                        {"recommender": "random", "name": "control"},
                        {"recommender": "sticky_artist", "name": "sticky"},
                    ],
                }
            ],
        }
    )
    answer = app.test_client().get("/experiments").get_json()
    assert [arm["name"] for arm in answer["experiments"][0]["arms"]] == ["control", "sticky"]
    assert (tmp_path / "log" / "data.json").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, "unknown config keys"),
        ({"experiments": []}, "non-empty list"),
        ({"experiments": [{"name": "E", "arms": []}]}, "needs a list of arms"),
        (
            {
                "experiments": [
                    {"name": "E", "arms": [{"recommender": "random"}, {"recommender": "toppop", "path": "x"}]}
                ]
            },
            "k",
        ),
        (
            {"experiments": [{"name": "E", "arms": [{"recommender": "random"}, {"recommender": "lightfm"}]}]},
            "recommender must be",
        ),
        ({"store": "postgres://x"}, "store"),
        ({"seed": "abc"}, "seed"),
        ({"log_max_bytes": 1000}, r"at least 1024 x `log_backup_count` = 1024000, got 1000"),
        ({"log_max_bytes": 4000, "log_backup_count": 500}, "renames every kept file"),
    ],
)
def test_invalid_configs_are_refused_with_the_reason(write_config, world, change, message):
    path = write_config([world.top_pop_experiment()])
    path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()) | change))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize("size", [{"log_max_bytes": 0}, {"log_max_bytes": 2048, "log_backup_count": 2}])
def test_log_sizes_at_the_floor_or_without_rotation_are_accepted(write_config, world, size):
    path = write_config([world.top_pop_experiment()])
    path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()) | size))
    assert load_config(path).log_max_bytes == size["log_max_bytes"]


def exploring_top_pop(world, exploration) -> dict:
    """The TOP_POP experiment with its T1 arm exploring."""
    experiment = world.top_pop_experiment()
    experiment["arms"][1]["exploration"] = exploration
    return experiment


def test_an_arm_may_explore_a_share_of_its_requests(write_config, world):
    arms = load_config(write_config([exploring_top_pop(world, 0.2)])).experiments[0].arms
    assert [arm.exploration for arm in arms] == [0.0, 0.2, 0.0, 0.0]
    assert arms[1].describe()["exploration"] == 0.2
    assert "exploration" not in arms[0].describe()


@pytest.mark.parametrize("exploration", [-0.1, 1.0, "x", True, float("nan")])
def test_exploration_must_be_a_share_below_one(write_config, world, exploration):
    message = "`experiments[0].arms[1].exploration` must be a number >= 0 and < 1 (a share of requests), got "
    with pytest.raises(ConfigError, match=re.escape(message + repr(exploration))):
        load_config(write_config([exploring_top_pop(world, exploration)]))


def test_data_files_with_ids_outside_the_catalog_are_refused(write_config, tmp_path):
    (tmp_path / "top.json").write_text("[1, 2, 500]")
    config = write_config(
        [{"name": "E", "arms": [{"recommender": "random"}, {"recommender": "toppop", "path": "top.json", "k": 2}]}]
    )
    with pytest.raises(DataFileError, match="500 is not a track id"):
        create_app(config)
    assert issubclass(DataFileError, FormatError)
    result = run_botify("serve", "--config", str(config), "--port", "0")
    assert result.returncode == 2 and "500 is not a track id" in result.stderr


def test_several_workers_need_a_shared_store(write_config, world):
    config = write_config([world.top_pop_experiment()])
    with pytest.raises(ServiceFailed, match="several workers need a shared store"):
        with served(config, workers=2):
            pass


def test_unreachable_redis_is_a_clear_startup_error(write_config, world, tmp_path, loopback_port):
    dead_store = f"redis://127.0.0.1:{loopback_port}/0"  # nothing listens there
    config = write_config([world.top_pop_experiment()], store=dead_store)
    result = run_botify("serve", "--config", str(config), "--port", "0")
    assert result.returncode == 2 and "Error" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_experiment_objects_assign_like_the_shared_function():
    from botify.config import ArmConfig, ExperimentConfig
    from botify.experiments import Experiment

    arms = tuple(ArmConfig(name, "random") for name in ("C", "T1", "T2", "T3", "T4"))
    experiment = Experiment(ExperimentConfig("HOMEWORK", arms), [None] * 5)
    assert [experiment.arm_index(user) for user in range(2000)] == [
        assign_arm("HOMEWORK", 5, user) for user in range(2000)
    ]
    counts = [sum(experiment.arm_index(user) == arm for user in range(2000)) for arm in range(5)]
    assert min(counts) > 300  # a balanced split
