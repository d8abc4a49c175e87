"""Reading and checking params.yaml: configuration flows from it, never from edited code.

Stages run from the repository root (DVC runs every command there), so the default path is `params.yaml` in the
current folder; notebooks read it through `load_params` too, so a value has exactly one home. Every key is checked
against one schema (types, allowed values, ranges) before any stage does work: the pipeline's first stage, `params`,
runs `python -m botify_lab.pipeline.params`, and every other stage depends on it. `load_params` returns the checked
file as typed, read-only sections (`params.train.lr`), so a stage reads its own section by name and a typo in a key
is an AttributeError, not a silent default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from botify_lab.pipeline import layout
from botify_lab.research.choices import ALGORITHMS, LOSSES, OPTIMIZERS, SIMILARITIES, SWEEP_SIMILARITIES
from sim.settings import (
    COUNT,
    KNOB_KINDS,
    LISTENING_KNOB_KINDS,
    NON_NEGATIVE,
    POSITIVE,
    REAL,
    SEED,
    SHARE,
    SIZE_SETTINGS,
    SOURCES,
)

PARAMS_FILE = Path("params.yaml")
# A folder: every DVC stage then notes the params.yaml keys it reads there (`<stage>.keys`), so that a test can hold
# each stage's `params:` list in dvc.yaml to exactly what it reads (DVC names the running stage in DVC_STAGE).
PARAMS_TRACE = "BOTIFY_LAB_PARAMS_TRACE"


def read_params_file(path: Path | str = PARAMS_FILE) -> dict:
    """params.yaml as parsed YAML, unchecked (for the world's bootstrap, which checks only `world:`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run stages from the repository root (where params.yaml is)")
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """params.yaml checked against the schema below (ParamsError lists every problem), as typed sections:
    `params.train.lr`, `params.models["ours"].embedding_dim`."""
    params = check_params(read_params_file(path), str(path))
    trace_dir, stage = os.environ.get(PARAMS_TRACE), os.environ.get("DVC_STAGE")
    if trace_dir and stage:
        record = Path(trace_dir) / f"{stage}.keys"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.touch()  # a stage that reads nothing still says it ran
        return TracedParams(params, "", str(record))
    return params


_NOTED_READS: set[tuple[str, str]] = set()


class TracedParams:
    """The checked params (or a section, or a mapping in them) noting the key path of every value read: a leaf by
    its path, a section read whole (dumped, iterated, listed, compared) by the section's path ("" is the whole
    file). Only while tracing; stages read it exactly as they read the sections it wraps."""

    __slots__ = ("_value", "_path", "_record")

    def __init__(self, value, path: str, record: str):
        self._value, self._path, self._record = value, path, record

    def __reduce__(self):  # a worker process gets a traced copy
        return TracedParams, (self._value, self._path, self._record)

    def _key_path(self, key) -> str:
        return f"{self._path}.{key}" if self._path else str(key)

    def _note(self, key_path: str) -> None:
        if (self._record, key_path) not in _NOTED_READS:
            _NOTED_READS.add((self._record, key_path))
            with open(self._record, "a", encoding="utf-8") as handle:
                handle.write(key_path + "\n")

    def _read(self, key, value):
        if isinstance(value, (BaseModel, dict)):
            return TracedParams(value, self._key_path(key), self._record)
        self._note(self._key_path(key))
        return value

    def __getattr__(self, name: str):
        value = getattr(self._value, name)
        field = type(self._value).model_fields.get(name)
        if field is None:
            return value  # a method of the section
        return self._read(field.alias or name, value)  # by its key in params.yaml

    def __getitem__(self, key):
        return self._read(key, self._value[key])

    def get(self, key, default=None):
        if key in self._value:
            return self[key]
        self._note(self._key_path(key))
        return default

    def __contains__(self, key) -> bool:
        present = key in self._value
        if not (present and isinstance(self._value[key], (BaseModel, dict))):  # a section's presence is its keys'
            self._note(self._key_path(key))
        return present

    def _whole(self):
        self._note(self._path)
        return self._value

    def model_dump(self, **options) -> dict:
        return self._whole().model_dump(**options)

    def __iter__(self):
        return iter(self._whole())

    def keys(self):
        return self._whole().keys()

    def values(self):
        return self._whole().values()

    def items(self):
        return self._whole().items()

    def __len__(self) -> int:
        return len(self._whole())

    def __eq__(self, other) -> bool:
        return self._whole() == other

    __hash__ = None


def model_names(params: Params) -> list[str]:
    """The contextual models of `models:`, in the order params.yaml lists them."""
    return list(params.models)


# ---------------------------------------------------------------------------------------------------------------
# The schema: every key, its type, allowed values and range, checked before any stage does work.

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(gt=0, lt=1)]
Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_]+$")]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


UnitShare = Annotated[float, Field(ge=0, le=1)]

# The simulator names the world's knobs and the kind of value each takes (`sim.settings`); the schema bounds them.
KIND_FIELDS = {
    COUNT: PositiveInt,
    SEED: NonNegativeInt,
    REAL: float,
    NON_NEGATIVE: NonNegativeFloat,
    POSITIVE: PositiveFloat,
    SHARE: UnitShare,
}


def _knob_fields(kinds: dict[str, str]) -> dict:
    return {name: (KIND_FIELDS[kind], ...) for name, kind in kinds.items()}


ListeningParams = create_model(
    "ListeningParams",
    __base__=Section,
    __doc__="`world.listening:`, the knobs of the world factorized from a listening history (`sim.listening`).",
    **_knob_fields(LISTENING_KNOB_KINDS),
)


class WorldSource(Section):
    """`world:`'s keys that choose where the world comes from; `WorldParams` adds its sizes and knobs."""

    source: Literal[SOURCES] = "generated"
    listening: ListeningParams | None = None
    course_dir: str | None = None

    @model_validator(mode="after")
    def listening_source_has_its_knobs(self):
        if self.source == "listening" and self.listening is None:
            raise ValueError("world.source is 'listening', so world.listening must hold its knobs")
        return self

    @model_validator(mode="after")
    def course_source_names_its_folder(self):
        if self.source == "course" and not self.course_dir:
            raise ValueError(
                "world.source is 'course', so world.course_dir must name the folder holding the "
                "course's tracks.json and users.json"
            )
        return self


WorldParams = create_model(
    "WorldParams",
    __base__=WorldSource,
    **_knob_fields({key: kind for key, (_, kind, _) in SIZE_SETTINGS.items()}),
    **_knob_fields(KNOB_KINDS),
)


# How a stage's traffic reaches the service: over HTTP (the real server) or in process (the same log, no sockets).
TRANSPORTS = ("http", "in_process")
Transport = Literal[TRANSPORTS]


class TrafficParams(Section):
    episodes: PositiveInt
    processes: Annotated[int, Field(ge=1, le=64)]
    transport: Transport


class RoundParams(Section):
    after: Name  # the round before (DVC cannot count, so each round names the one it follows)


ROUND_PREFIX = "round"


def round_name(number: int) -> str:
    """Round 0 is the collection itself; later rounds are round1, round2, ... (their stage is loop@roundN)."""
    return f"{ROUND_PREFIX}{number}"


def round_names(params: Params) -> list[str]:
    """Every round of the loop of days, round0 (the collection) first."""
    return [round_name(0), *params.collect.rounds]


def round_number(name: str) -> int:
    """A round's place in the loop, from its name alone (the schema keeps collect.rounds as round1, round2, ... in
    order), so a round's stage does not read the rounds after it: adding one reruns none before it."""
    return int(name.removeprefix(ROUND_PREFIX))


def round_first_day(params: Params, round_: str) -> int:
    """The first simulated day a round serves: each round continues the same seeded traffic `collect.days` later."""
    return round_number(round_) * params.collect.days


def training_rounds(params: Params, before: str | None = None) -> list[str]:
    """The rounds whose logs a training reads: every round (or those before round `before`), the last
    `collect.window` of them when the window is not 0."""
    rounds = round_names(params) if before is None else [round_name(number) for number in range(round_number(before))]
    window = params.collect.window
    return rounds[-window:] if window else rounds


class CollectParams(TrafficParams):
    experiment: Name
    recommenders: Annotated[list[Literal["random", "sticky_artist"]], Field(min_length=2)]
    days: PositiveInt
    serve: Name
    exploration: Annotated[float, Field(ge=0, lt=1)]
    window: NonNegativeInt
    rounds: dict[str, RoundParams]

    @model_validator(mode="after")
    def rounds_follow_each_other(self):
        for number, (name, round_) in enumerate(self.rounds.items(), start=1):
            if name != round_name(number) or round_.after != round_name(number - 1):
                expected = f"{round_name(number)}: {{after: {round_name(number - 1)}}}"
                raise ValueError(
                    f"collect.rounds: entry {number} is {name}: {{after: {round_.after}}}, expected {expected} "
                    "(rounds are round1, round2, ... in order, each after the one before)"
                )
        return self


class ModelParams(Section):
    label: Annotated[str, Field(min_length=1)]
    embedding_dim: PositiveInt
    similarity: Literal[SIMILARITIES]
    loss: Literal[LOSSES]
    mlp_hidden: PositiveInt
    mlp_sigmoid: bool
    optimizer: Literal[OPTIMIZERS]
    neighbours: PositiveInt  # tracks exported per track, one served uniformly by the Contextual recommender
    exclude_self: bool  # whether a track's own id is left out of its neighbours (the course's 2023 file kept it)


class TrainParams(Section):
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    batch_size: PositiveInt
    max_epochs: PositiveInt
    plateau_patience: NonNegativeInt
    early_stopping_patience: PositiveInt
    splits: Annotated[list[Share], Field(min_length=3, max_length=3)]
    init_std: PositiveFloat

    @model_validator(mode="after")
    def shares_sum_to_one(self):
        if abs(sum(self.splits) - 1.0) > 1e-9:
            raise ValueError(f"train.splits must sum to 1, got {self.splits} (sum {sum(self.splits)})")
        return self


class RecommenderParams(Section):
    """A recommender of one's own (examples/recommenders/README.md): the class in `file`, its constructor's keyword
    arguments in `params` and its data files in `data` (paths from the repository root)."""

    label: Annotated[str, Field(min_length=1)]
    file: Annotated[str, Field(pattern=r"\.py$")]
    class_name: Annotated[str, Field(alias="class", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    params: dict[str, Any] = {}
    data: dict[Name, str] = {}

    @model_validator(mode="after")
    def data_comes_from_the_pipeline(self):
        roots = [root.as_posix() for root in layout.RECOMMENDER_DATA]
        for name, path in self.data.items():
            if not any(Path(path).as_posix().startswith(root + "/") for root in roots):
                raise ValueError(
                    f"data.{name} = {path!r}: a data file must be one the pipeline makes, under "
                    f"{', '.join(root + '/' for root in roots)} (so DVC reruns what serves it when it changes)"
                )
        return self


class SimulateParams(TrafficParams):
    experiment: Name
    control: Name
    treatment: Name
    days: PositiveInt


class AbParams(Section):
    alpha: Share
    power: Share
    srm_alpha: Share
    cuped: bool


class HttpParams(Section):
    connections: Annotated[int, Field(ge=1, le=256)]


class CalibrateParams(Section):
    seeds: PositiveInt
    episodes: PositiveInt
    random_episodes: PositiveInt
    processes: Annotated[int, Field(ge=1, le=64)]
    transport: Transport
    tolerances: dict[Literal["mean_time_per_session", "mean_tracks_per_session", "time", "sessions"], Share]


class IndexedParams(Section):
    positive_time: Annotated[float, Field(ge=0, lt=1)]
    min_user_positives: PositiveInt
    min_track_positives: PositiveInt
    test_share: Share
    algorithm: Literal[ALGORITHMS]
    trials: PositiveInt
    k: PositiveInt
    top: PositiveInt
    user_based_neighbours: PositiveInt


class ToppopOfflineParams(Section):
    positive_time: Annotated[float, Field(ge=0, lt=1)]
    train_share: Share
    ks: Annotated[list[PositiveInt], Field(min_length=1)]
    k: PositiveInt


class DiverseI2IParams(Section):
    k: PositiveInt
    per_artist: PositiveInt


class FidelityGamma(Section):
    gamma: Annotated[float, Field(gt=0, le=1)]
    episodes: PositiveInt


class FidelityParams(Section):
    seeds: PositiveInt
    gammas: Annotated[list[FidelityGamma], Field(min_length=1)]
    processes: Annotated[int, Field(ge=1, le=64)]
    transport: Transport
    top_pop_seeds: PositiveInt
    top_pop_episodes: PositiveInt
    reference_episodes: NonNegativeInt
    course_contextual: Name
    contextual_episodes: NonNegativeInt
    tolerances: dict[
        Literal[
            "mean_time_per_session",
            "mean_tracks_per_session",
            "hist",
            "hist_1.0",
            "saturation_share",
            "position",
            "session_length",
        ],
        PositiveFloat,
    ]


class KnobSearch(Section):
    """Candidate worlds: named points, one-knob sweeps and a grid, each a set of knob overrides."""

    points: dict[str, dict[str, float]]
    sweeps: dict[str, list[float]]
    grid: dict[str, list[float]]

    def check_knobs(self, known: set[str], where: str, kind: str) -> None:
        groups = [(f"points.{name}", point) for name, point in self.points.items()]
        for group, names in groups + [("sweeps", self.sweeps), ("grid", self.grid)]:
            unknown = sorted(set(names) - known)
            if unknown:
                raise ValueError(f"{where}.{group} names unknown {kind} knobs {unknown}")


class FidelitySearchParams(KnobSearch):
    seeds: PositiveInt
    episodes: PositiveInt
    top_pop_seeds: PositiveInt
    top_pop_episodes: PositiveInt
    listening: KnobSearch | None = None  # the candidates when world.source is listening (its knobs)


class AnalysisParams(Section):
    engine: Literal["pandas", "spark"]


class SparkParams(Section):
    master: Annotated[str, Field(min_length=1)]


class LeaderboardParams(TrafficParams):
    experiment: Name
    toppop_k: PositiveInt


class OpeParams(TrafficParams):
    experiment: Name
    replicates: Annotated[int, Field(ge=2)]
    reward_prior: NonNegativeFloat


class SweepGrid(Section):
    """The sweep's axes: every combination is a variant (DVC's `matrix`, one cached stage each)."""

    embedding_dim: Annotated[list[PositiveInt], Field(min_length=1)]
    similarity: Annotated[list[Literal[SWEEP_SIMILARITIES]], Field(min_length=1)]
    loss: Annotated[list[Literal[LOSSES]], Field(min_length=1)]
    lr: Annotated[list[PositiveFloat], Field(min_length=1)]

    @model_validator(mode="after")
    def each_value_once(self):
        for axis in type(self).model_fields:
            values = getattr(self, axis)
            if len(set(values)) != len(values):
                raise ValueError(f"sweep.grid.{axis} = {values}: each value once (DVC would name two variants alike)")
        return self


class SweepParams(TrafficParams):
    base: Name
    control: Name
    experiment: Name
    days: PositiveInt
    k: PositiveInt
    relevant_time: Annotated[float, Field(ge=0, le=1)]
    grid: SweepGrid


class Params(Section):
    seed: NonNegativeInt
    world: WorldParams
    collect: CollectParams
    models: Annotated[dict[Name, ModelParams], Field(min_length=1)]
    recommenders: dict[Name, RecommenderParams] = {}
    train: TrainParams
    simulate: SimulateParams
    ab: AbParams
    http: HttpParams
    calibrate: CalibrateParams
    indexed: IndexedParams
    toppop_offline: ToppopOfflineParams
    diverse_i2i: DiverseI2IParams
    leaderboard: LeaderboardParams
    ope: OpeParams
    fidelity: FidelityParams
    fidelity_search: FidelitySearchParams
    sweep: SweepParams
    analysis: AnalysisParams
    spark: SparkParams

    @model_validator(mode="after")
    def names_exist(self):
        references = {
            "simulate.control": self.simulate.control,
            "fidelity.course_contextual": self.fidelity.course_contextual,
            "collect.serve": self.collect.serve,
            "sweep.base": self.sweep.base,
            "sweep.control": self.sweep.control,
        }
        for key, name in references.items():
            if name not in self.models:
                raise ValueError(f"{key} = {name!r}: must name a model of `models:` ({', '.join(self.models)})")
        both = sorted(set(self.models) & set(self.recommenders))
        if both:
            raise ValueError(f"{', '.join(both)}: a name is either a model of `models:` or one of `recommenders:`")
        if self.simulate.treatment not in self.models and self.simulate.treatment not in self.recommenders:
            known = ", ".join([*self.models, *self.recommenders])
            raise ValueError(
                f"simulate.treatment = {self.simulate.treatment!r}: must name a model of `models:` or one of "
                f"`recommenders:` ({known})"
            )
        if self.simulate.control == self.simulate.treatment:
            raise ValueError("simulate.control and simulate.treatment must be different models")
        knobs = set(WorldParams.model_fields) - {"source", "course_dir", "listening", "seed", "tracks", "users", "dim"}
        self.fidelity_search.check_knobs(knobs, "fidelity_search", "world")
        if self.fidelity_search.listening is not None:
            self.fidelity_search.listening.check_knobs(
                set(ListeningParams.model_fields), "fidelity_search.listening", "listening"
            )
        base = self.models[self.sweep.base]
        if self.sweep.k > base.neighbours:
            raise ValueError(
                f"sweep.k = {self.sweep.k}: the variants export models.{self.sweep.base}.neighbours = "
                f"{base.neighbours} tracks per track, so hit rate and NDCG can look at most that deep"
            )
        for name, model in self.models.items():
            if model.neighbours > self.world.tracks - model.exclude_self:
                raise ValueError(
                    f"models.{name}.neighbours = {model.neighbours}: a catalog of world.tracks = {self.world.tracks} "
                    f"has {self.world.tracks - model.exclude_self} candidates"
                )
        return self


class ParamsError(ValueError):
    """params.yaml breaks its schema; one line per problem, each naming the key, the value and what is allowed."""


def _problem_line(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{key}: missing"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (a typo?)"
    if error["type"] == "value_error":
        return message
    return f"{key} = {error['input']!r}: {message}"


def check_params(params: object, source: str = str(PARAMS_FILE), schema: type[BaseModel] = Params) -> BaseModel:
    """Validate parsed params (the whole file, or one section with its schema); ParamsError lists every problem."""
    try:
        return schema.model_validate(params)
    except ValidationError as error:
        prefix = (
            ""
            if schema is Params
            else next(name for name, field in Params.model_fields.items() if field.annotation is schema) + "."
        )
        lines = [f"{source}: {prefix}{_problem_line(problem)}" for problem in error.errors(include_url=False)]
        raise ParamsError("\n".join(lines)) from None


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m botify_lab.pipeline.params", description="Check params.yaml against the pipeline's schema."
    )
    parser.add_argument("--params", default=PARAMS_FILE, type=Path)
    parser.add_argument("--stamp", default=layout.PARAMS_CHECKED, type=Path, help="file written when the check passes")
    args = parser.parse_args(argv)
    try:
        load_params(args.params)
    except (ParamsError, FileNotFoundError, yaml.YAMLError) as error:
        print(error, file=sys.stderr)
        return 2
    args.stamp.parent.mkdir(parents=True, exist_ok=True)
    args.stamp.write_text("params.yaml follows the schema\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
