"""The recommender service without any transport: what a request does, and the one log line it writes.

The HTTP app (`botify.app`) is a thin layer over this; a caller in the same process (the simulator, a notebook)
can drive the same object and get the same log, line for line:

    from botify.service import Service

    service = Service.open("botify.yaml")        # a config path or dict; takes the log folder's lock
    try:
        track = service.next_track(user=5533, track=9, time=0.25)   # logs one "next" line, returns the track id
        service.last_track(user=5533, track=track, time=1.0)        # logs one "last" line
    finally:
        service.close()                              # saves the memory store's counters, releases the folder

`next_track` and `last_track` check their arguments (`BadRequest`: user an int in 0..2**31-1, track an id of the
catalog, time a number in [0, 1]), write exactly one line, and raise `ServiceUnavailable` (answered 503 over HTTP)
when the counter store or the log cannot take the event, in which case nothing is logged. `started` is the
`time.perf_counter()` at which the request arrived (the HTTP layer passes it, so `latency` covers input parsing as
the course measured it); by default the call's own start. Under `clock: simulated` each call passes `timestamp`
(the event's simulated time, ms since epoch), which is logged instead of the server's clock, with latency 0 (not
measured): the log then depends only on the requests, not on when they were served.

An arm may serve a recommender class of one's own (`botify.custom`): the service then records each of the arm's
users' playbacks in the store (the session so far and the finished ones, a session ending with /last) and hands
them to the class with a generator seeded from the request's draw. When the class fails (it raises, or answers
something that is not a catalog track id), `next_track` raises `RecommenderFailed` (answered 500 over HTTP with the
reason) after recording what happened: the playback stays in the user's session, the request keeps its number, and
the event, which the log's schema cannot hold without a recommendation, is appended to `<log_dir>/failed.json` (one
JSON line: the event's fields with recommendation null, plus "error"); data.json stays a log of answered requests.
Each distinct failure is reported once on stderr, and `close()` reports how many requests failed.

Log lines follow the project's event schema (`botify_lab.formats.event`): message, timestamp (ms since epoch),
user, track, time, latency (seconds), recommendation (null on "last"), experiments (experiment name -> the user's
arm, for every experiment), and on "next" lines propensity (the probability with which the serving arm's
recommender drew that recommendation). The first experiment of the config serves /next; the others are only logged.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mmh3
import orjson

from botify_lab.formats import event

from .catalog import Catalog, load_catalog
from .config import ArmConfig, BotifyConfig, is_custom, load_config
from .custom import CustomRecommender, RecommenderFailed, SessionContext, build_custom
from .eventlog import EventLog, FolderLock, LogUnavailable, warn
from .experiments import Experiment
from .recommenders import build_recommender
from .store import StoreUnavailable, open_store

MAX_USER_ID = 2**31 - 1
MAX_TIMESTAMP = 2**53  # ms since epoch; larger values would not survive a JSON reader's doubles
FAILED_FILE_NAME = "failed.json"  # beside data.json: the events a custom recommender failed to answer
MAX_ERROR_CHARS = 500
FAILED_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
_clock = time.perf_counter

__all__ = ["BadRequest", "MAX_USER_ID", "RecommenderFailed", "Service", "ServiceUnavailable"]


class BadRequest(ValueError):
    """Input the service rejects (400 over HTTP); never logged as an event."""


class ServiceUnavailable(RuntimeError):
    """The counter store or the event log cannot take this event (503 over HTTP); nothing was logged."""


@dataclass
class Service:
    """Everything a request needs, built once (also what `serve` reports and closes)."""

    config: BotifyConfig
    catalog: Catalog
    experiments: tuple[Experiment, ...]
    store: object
    event_log: EventLog
    folder_lock: FolderLock | None = None
    counters: str = ""  # how the request counters started, for the startup line
    failures: Counter = field(default_factory=Counter)  # this process's custom recommender failures, by message

    @classmethod
    def open(
        cls, config: dict | str | Path | BotifyConfig, *, reset_counters: bool = False, journal_counters: bool = True
    ) -> Service:
        """Build the service from a config; lock its log folder; continue or zero the request counters.

        The counters continue when the log folder already holds events (a restart) and start from zero when it is
        new or empty, or when `reset_counters` is set. `journal_counters=False` skips the memory store's journal
        (one write per /next) where a crash loses the whole run anyway.
        """
        settings = config if isinstance(config, BotifyConfig) else load_config(config)
        catalog = load_catalog(settings.catalog)
        experiments = tuple(
            Experiment(experiment, [_build_arm(arm, catalog, experiment.name) for arm in experiment.arms])
            for experiment in settings.experiments
        )
        store = open_store(settings.store, settings.log_dir, journal=journal_counters)
        event_log = folder_lock = None
        try:
            # Only a shared store can serve several workers, so only then do other processes write this log.
            event_log = EventLog(
                settings.log_dir,
                max_bytes=settings.log_max_bytes,
                backup_count=settings.log_backup_count,
                shared_between_processes=store.shared_between_processes,
            )
            folder_lock = FolderLock(settings.log_dir)
        except BaseException:
            if event_log is not None:
                event_log.close()
            store.close()
            raise
        service = cls(settings, catalog, experiments, store, event_log, folder_lock)
        try:
            service.counters = store.start(fresh=reset_counters or not event_log.has_events())
        except BaseException:
            service.close()
            raise
        return service

    def __post_init__(self) -> None:
        self._serving = self.experiments[0]
        self._seed = self.config.seed
        self._catalog_size = len(self.catalog)
        # Built-in arms need no session: /last looks the user's arm up only when some arm serves a custom class.
        self.keeps_sessions = any(isinstance(arm, CustomRecommender) for arm in self._serving.recommenders)

    # -- reads ----------------------------------------------------------------------------------------------------

    def alive(self) -> dict:
        return {"status": "alive", "message": f"botify serving {self._catalog_size} tracks"}

    def track_row(self, track_id: str | int) -> dict | None:
        """The catalog row of an id given as text or int, or None for anything that is not a catalog id."""
        if isinstance(track_id, str):
            # Compare lengths before converting: int() of a huge digit string is slow or refused.
            if not (track_id.isascii() and track_id.isdigit()):
                return None
            if len(track_id.lstrip("0")) > len(str(self._catalog_size)):
                return None
            track_id = int(track_id)
        if type(track_id) is not int or not 0 <= track_id < self._catalog_size:
            return None
        return self.catalog.rows[track_id]

    def describe_experiments(self) -> dict:
        """Every experiment and its arms; data paths relative to the config's folder."""
        return {
            "experiments": [
                experiment.describe(experiment is self._serving, self.config.base_dir)
                for experiment in self.experiments
            ]
        }

    def arms_of(self, user: int) -> dict[str, str]:
        return {experiment.name: experiment.arm_names[experiment.arm_index(user)] for experiment in self.experiments}

    # -- events ---------------------------------------------------------------------------------------------------

    def next_track(
        self, user: int, track: int, time: float, *, started: float | None = None, timestamp: int | None = None
    ) -> int:
        """The recommended track after `track` listened for `time`; logs one "next" line."""
        if started is None:
            started = _clock()
        listen_time = self._check(user, track, time)
        timestamp = self._check_timestamp(timestamp)
        try:
            request_number = self.store.next_request_number(user)
        except StoreUnavailable as error:
            raise ServiceUnavailable(str(error)) from None
        draw = mmh3.hash128(f"{self._seed}:{user}:{request_number}:{track}:{listen_time!r}", signed=False)
        serving = self._serving
        recommender = serving.recommenders[serving.arm_index(user)]
        if isinstance(recommender, CustomRecommender):
            recommendation, propensity = self._ask(recommender, user, track, listen_time, draw, timestamp)
        else:
            recommendation = recommender.recommend(user, track, draw)
            propensity = recommender.propensity(user, track, recommendation)
        self._log("next", user, track, listen_time, started, recommendation, timestamp, propensity)
        return recommendation

    def _ask(self, recommender: CustomRecommender, user, track, listen_time, draw, timestamp) -> tuple:
        """A custom recommender's (track, propensity), the playback recorded in the user's session first."""
        session, finished = self._listen(user, track, listen_time, ends=False)
        context = SessionContext(user, session, finished, random.Random(draw))
        try:
            return recommender.answer(context, draw)
        except RecommenderFailed as error:
            self._record_failure(str(error), user, track, listen_time, timestamp)
            raise

    def _listen(self, user: int, track: int, listen_time: float, *, ends: bool):
        try:
            return self.store.listen(user, track, listen_time, ends=ends)
        except StoreUnavailable as error:
            raise ServiceUnavailable(str(error)) from None

    def _record_failure(self, message: str, user, track, listen_time, timestamp) -> None:
        """Keep the event a failed recommender could not answer (failed.json) and report a new reason once."""
        message = message[:MAX_ERROR_CHARS]
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        row = event("next", timestamp, user, track, listen_time, 0.0, None, self.arms_of(user))
        line = orjson.dumps({**row, "error": message}) + b"\n"
        try:
            descriptor = os.open(self.config.log_dir / FAILED_FILE_NAME, FAILED_FLAGS, 0o644)
            try:
                os.write(descriptor, line)
            finally:
                os.close(descriptor)
        except OSError as error:
            warn(f"cannot record a failed request in {self.config.log_dir / FAILED_FILE_NAME}: {error}")
        self.failures[message] += 1
        if self.failures[message] == 1:
            warn(f"{message} (user {user}, track {track}); the event is kept in {FAILED_FILE_NAME}; reported once")

    def last_track(
        self, user: int, track: int, time: float, *, started: float | None = None, timestamp: int | None = None
    ) -> None:
        """The session's last track and its listen time; logs one "last" line."""
        if started is None:
            started = _clock()
        listen_time = self._check(user, track, time)
        timestamp = self._check_timestamp(timestamp)
        serving = self._serving
        if self.keeps_sessions and isinstance(serving.recommenders[serving.arm_index(user)], CustomRecommender):
            self._listen(user, track, listen_time, ends=True)
        self._log("last", user, track, listen_time, started, None, timestamp, None)

    def _check(self, user, track, listen_time) -> float:
        if type(user) is not int or not 0 <= user <= MAX_USER_ID:
            raise BadRequest(f"user must be an integer in 0..{MAX_USER_ID}")
        if type(track) is not int or not 0 <= track < self._catalog_size:
            raise BadRequest(f"track must be an integer id in 0..{self._catalog_size - 1}")
        if type(listen_time) not in (int, float) or not (0.0 <= listen_time <= 1.0):  # NaN fails the comparison
            raise BadRequest("time must be a number in [0, 1]")
        return float(listen_time)

    def _check_timestamp(self, timestamp) -> int | None:
        """The simulated time a request must carry under `clock: simulated`; ignored under the wall clock."""
        if self.config.clock != "simulated":
            return None
        if type(timestamp) is not int or not 0 <= timestamp <= MAX_TIMESTAMP:
            raise BadRequest(
                "this service runs on a simulated clock: each event needs its time as an integer "
                f"in 0..{MAX_TIMESTAMP} (ms since epoch; the X-Botify-Time header over HTTP), got "
                f"{str(timestamp)[:40]!r}"
            )
        return timestamp

    def _log(
        self,
        message: str,
        user: int,
        track: int,
        listen_time: float,
        started: float,
        recommendation,
        timestamp: int | None,
        propensity: float | None,
    ) -> None:
        """One log line; latency covers the request up to here, as the course measured it (0 on a simulated clock)."""
        if timestamp is None:
            timestamp, latency = time.time_ns() // 1_000_000, _clock() - started
        else:
            latency = 0.0
        try:
            self.event_log.write(
                event(
                    message,
                    timestamp,
                    user,
                    track,
                    listen_time,
                    latency,
                    recommendation,
                    self.arms_of(user),
                    propensity,
                )
            )
        except LogUnavailable as error:
            raise ServiceUnavailable(f"event log unavailable, the event was not recorded: {error}") from None

    def close(self) -> None:
        """Save what must survive a restart (memory counters and sessions) and release the log folder; report how
        many requests custom recommenders failed. Safe to call twice."""
        if self.failures:
            warn(
                f"custom recommenders failed {sum(self.failures.values())} request(s) "
                f"({len(self.failures)} distinct error(s), see {self.config.log_dir / FAILED_FILE_NAME})"
            )
            self.failures.clear()
        self.store.close()
        self.event_log.close()
        if self.folder_lock is not None:
            self.folder_lock.release()


def _build_arm(arm: ArmConfig, catalog: Catalog, experiment: str):
    """A built-in recommender from the registry, or the arm's own class (its failures name the experiment)."""
    if is_custom(arm.recommender):
        return build_custom(arm, len(catalog), f"experiment {experiment}, arm {arm.name}")
    return build_recommender(arm, catalog)
