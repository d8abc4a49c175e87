"""Recommenders written outside botify: a class named in the config, served with the session it needs.

A config arm names the class as `recommender: path/to/file.py:ClassName` (relative to the config file, or absolute)
or `recommender: package.module:ClassName`, with keyword arguments for its constructor in `params:` and data files
in `data:` (paths resolved against the config file, passed as `pathlib.Path` keyword arguments). The class needs one
method, the course's

    def recommend_next(self, user: int, prev_track: int, prev_track_time: float) -> int

and may add a `context` parameter to it to read what the service keeps of the user (`SessionContext`: this
session's playbacks so far with their listen times, its first track, the user's earlier sessions, and a random
generator seeded for this request). A class written for the course's botify, which only uses `recommend_next` and
its constructor, runs unchanged: the service also seeds the global `random` (and `numpy.random`, when numpy is
loaded) from the request's draw before each call, so a class that draws from them gives the same log for the same
seed and requests. An optional `propensity(user, prev_track, served)` gives the probability with which it served
that track (logged on the "next" line; without it the line has no propensity).

Anything wrong with the class (the file or module cannot be imported, no such class, no `recommend_next`, a data
file is missing, the constructor refuses its params) stops the service at start-up with one line naming the file.
An exception raised while answering, an answer that is not a catalog track id, or a propensity outside (0, 1]
becomes `RecommenderFailed` (see `botify.service` for what the service answers and records then).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import random
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError
from .store import Session

if TYPE_CHECKING:
    from .config import ArmConfig

# Calls into custom recommenders are serialised: the global generators are seeded per request, and a service on
# Redis answers /next from a few threads at once.
_CALL_LOCK = threading.Lock()


class RecommenderFailed(RuntimeError):
    """A custom recommender raised or gave an unusable answer; the message names the arm and the class."""


@dataclass(frozen=True)
class SessionContext:
    """What the service knows of the user at this request, for a custom recommender to read.

    `session` holds this session's playbacks so far, oldest first, the last one being the request's own
    (prev_track, prev_track_time); `earlier_sessions` the user's finished sessions (each ended by /last), oldest
    first; `random` a generator seeded from this request's draw (the same seed, user, request count and request
    always give the same numbers).
    """

    user: int
    session: Session
    earlier_sessions: tuple[Session, ...]
    random: random.Random

    @property
    def first_track(self) -> int:
        return self.session[0][0]


class CustomRecommender:
    """An arm's custom recommender object as the service calls it: seeded, checked, its failures named."""

    def __init__(self, instance: object, label: str, catalog_size: int):
        self.instance = instance
        self.label = label
        self.catalog_size = catalog_size
        self._recommend_next = instance.recommend_next
        self._next_takes_context = _takes_context(self._recommend_next)
        self._propensity = getattr(instance, "propensity", None)
        self._propensity_takes_context = self._propensity is not None and _takes_context(self._propensity)

    def answer(self, context: SessionContext, draw: int) -> tuple[int, float | None]:
        """The recommended track and its propensity (None when the class gives none)."""
        user, (prev_track, prev_time) = context.user, context.session[-1]
        with _CALL_LOCK:
            _seed_global_generators(draw)
            served = self._call(self._recommend_next, self._next_takes_context, context, user, prev_track, prev_time)
            if isinstance(served, bool) or not hasattr(served, "__index__") or not 0 <= served < self.catalog_size:
                raise RecommenderFailed(
                    f"{self.label} answered {str(served)[:40]!r}, not a track id in 0..{self.catalog_size - 1}"
                )
            served = int(served)
            if self._propensity is None:
                return served, None
            given = self._call(self._propensity, self._propensity_takes_context, context, user, prev_track, served)
        # numpy's floats pass; NaN fails the comparison
        if isinstance(given, bool) or not hasattr(given, "__float__") or not 0.0 < float(given) <= 1.0:
            raise RecommenderFailed(f"{self.label}: propensity gave {str(given)[:40]!r}, not a number in (0, 1]")
        return served, float(given)

    def _call(self, method: Callable, takes_context: bool, context: SessionContext, *arguments):
        try:
            return method(*arguments, context=context) if takes_context else method(*arguments)
        except Exception as error:
            raise RecommenderFailed(f"{self.label} raised {type(error).__name__}: {error}") from error


def load_class(source: Path | str, class_name: str, where: str) -> type:
    """The recommender class `class_name` of a file (or a module's name); any failure is one ConfigError line."""
    origin = str(source)
    module = _import(source, where, origin)
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls):
        raise ConfigError(f"{where}: {origin} has no class {class_name!r}")
    if not callable(getattr(cls, "recommend_next", None)):
        raise ConfigError(f"{where}: {origin}: {class_name} has no recommend_next(user, prev_track, prev_track_time)")
    return cls


def build_custom(arm: ArmConfig, catalog_size: int, where: str) -> CustomRecommender:
    """Import the arm's class and build it with its params and data files; any failure is one ConfigError line."""
    class_name = arm.recommender.rpartition(":")[2]
    origin = str(arm.source)
    cls = load_class(arm.source, class_name, where)
    missing = [f"{name}={path}" for name, path in arm.data.items() if not path.exists()]
    if missing:
        raise ConfigError(f"{where}: {origin}: data files not found: {', '.join(missing)}")
    arguments = {**arm.params, **arm.data}
    try:
        instance = cls(**arguments)
    except Exception as error:
        given = ", ".join(sorted(arguments)) or "no arguments"
        raise ConfigError(
            f"{where}: {origin}: {class_name}({given}) failed: {type(error).__name__}: {error}"
        ) from error
    return CustomRecommender(instance, f"recommender {arm.recommender} (arm {arm.name})", catalog_size)


def _import(source: Path | str, where: str, origin: str):
    try:
        if isinstance(source, str):
            return importlib.import_module(source)
        if not source.is_file():
            raise ConfigError(f"{where}: no recommender file {origin}")
        # One module per file, named after its path, so two arms may load two files that share a name.
        name = f"botify_custom_{source.stem}_{hashlib.sha256(str(source).encode()).hexdigest()[:12]}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, source)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it, as an import would (dataclasses look their module up)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(f"{where}: cannot import {origin}: {type(error).__name__}: {error}") from error


def _takes_context(method: Callable) -> bool:
    try:
        return "context" in inspect.signature(method).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def _seed_global_generators(draw: int) -> None:
    """Seed what a course-style class draws from (`random`, and `numpy.random` if something loaded numpy)."""
    random.seed(draw)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed([(draw >> shift) & 0xFFFFFFFF for shift in (0, 32, 64, 96)])
