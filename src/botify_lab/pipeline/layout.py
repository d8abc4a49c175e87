"""Where every stage reads and writes: the one home of the pipeline's paths (dvc.yaml names the same paths, and
`tests/pipeline/test_layout.py` checks that the two agree). Paths are relative to the repository root."""

from __future__ import annotations

from pathlib import Path

WORLD = Path("data")
CATALOG = WORLD / "tracks.json"
BUILD = Path("build")
PARAMS_CHECKED = BUILD / "params.checked"
NOTEBOOKS = BUILD / "notebooks"
ROUNDS = BUILD / "rounds"  # the loop of days: one folder per round (its log, and the models it served)
COLLECT = ROUNDS / "round0"  # round 0: the collection from the course's early recommenders
COLLECT_LOG = COLLECT / "log"
ROUND_SUMMARY = "round.json"  # in each round's folder: what it served and how the served traffic went
PAIRS = BUILD / "pairs"  # every model's training pairs, read once from the rounds' logs
PAIRS_FILE = PAIRS / "pairs.npz"
PAIRS_RECORD = PAIRS / "pairs.json"
TOP_TRACKS = BUILD / "toppop" / "top_tracks.json"
MODELS = BUILD / "models"
RECS = BUILD / "recs"
SIMULATE = BUILD / "simulate"
SIMULATE_LOG = SIMULATE / "log"
ANALYSIS = BUILD / "analysis"  # the full A/B table and the latency figures (machine-dependent, kept out of git)
CALIBRATE = BUILD / "calibrate"
INDEXED = BUILD / "indexed"
USER_RECS = INDEXED / "user_recs.json"
INDEXED_MODEL = INDEXED / "model.npz"
INDEXED_TUNING = INDEXED / "tuning.json"
USER_BASED_RECS = INDEXED / "user_based_recs.json"
I2I = BUILD / "i2i"
I2I_RECS = I2I / "diverse_i2i.json"  # capped per artist: the "diverse i2i" arm
PLAIN_I2I_RECS = I2I / "i2i.json"  # uncapped: the collaborative model's own neighbours
FIDELITY = BUILD / "fidelity"
REFERENCE = BUILD / "reference"  # the true-neighbour reference, from the hidden world: a labelled reference only
REFERENCE_RECS = REFERENCE / "true_neighbours.json"
LEADERBOARD = BUILD / "leaderboard"
LEADERBOARD_LOG = LEADERBOARD / "log"
OPE = BUILD / "ope"  # the held-out logging day that off-policy evaluation reads
OPE_LOG = OPE / "log"
SWEEP = BUILD / "sweep"  # one folder per variant of the sweep (its record and exported lists)
METRICS = Path("metrics")
PLOTS = Path("plots")  # small CSV tables DVC draws with `dvc plots show/diff`
WORLD_SEARCH_TABLE = METRICS / "fidelity_search.csv"  # `make world-search`: the worlds tried
WORLD_CHOICE_TABLE = METRICS / "fidelity_search_complete.csv"  # `make world-choose`: its survivors, run completely
FIGURES = Path("reports") / "figures"
REPORT = Path("reports") / "html"


def round_dir(name: str) -> Path:
    return ROUNDS / name


def round_log(name: str) -> Path:
    return round_dir(name) / "log"


def sweep_dir(variant: str) -> Path:
    return SWEEP / variant


def model_dir(name: str) -> Path:
    return MODELS / name


# Where a recommender of one's own (params.yaml `recommenders:`) may read its data files: the outputs the leaderboard
# and the homework's test depend on, so DVC reruns them when such a file changes.
RECOMMENDER_DATA = (WORLD, RECS, TOP_TRACKS.parent)


def recommender_record(name: str) -> Path:
    """What the stage `recommender@<name>` writes (beside the exported lists, which the serving stages read)."""
    return RECS / f"{name}.recommender.json"


def recs_file(name: str) -> Path:
    """The track-recommendations file a model's export writes for the Contextual recommender."""
    return RECS / f"{name}.json"


def metrics_file(name: str) -> Path:
    return METRICS / f"{name}.json"


def figure_file(name: str) -> Path:
    return FIGURES / f"{name}.png"


def plot_file(name: str) -> Path:
    return PLOTS / f"{name}.csv"
