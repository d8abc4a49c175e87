"""The Flask application: spec section 3's API plus GET /experiments, strict input checks, one log line per event."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import mmh3
import orjson
import redis
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .catalog import Catalog, load_catalog
from .config import BotifyConfig, load_config
from .eventlog import EventLog
from .experiments import Experiment
from .recommenders import build_recommender
from .store import open_store

MAX_USER_ID = 2**31 - 1
MAX_BODY_BYTES = 4096
USER_ID_PATTERN = re.compile(r"[0-9]{1,10}")
JSON_TYPE = "application/json"


class BadRequest(Exception):
    """Input the service rejects with 400; never logged as an event."""


@dataclass
class Service:
    """Everything a request needs, built once by create_app (also what `serve` reports and closes)."""

    config: BotifyConfig
    catalog: Catalog
    experiments: tuple[Experiment, ...]
    store: object
    event_log: EventLog

    def close(self) -> None:
        self.event_log.close()
        self.store.close()


def json_response(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype=JSON_TYPE)


def create_app(config: dict | str | Path) -> Flask:
    """Build the service from a config dict or YAML path; the app's `botify` extension is the Service."""
    settings = load_config(config)
    catalog = load_catalog(settings.catalog)
    experiments = tuple(
        Experiment(experiment, [build_recommender(arm, catalog) for arm in experiment.arms])
        for experiment in settings.experiments
    )
    store = open_store(settings.store)
    service = Service(
        config=settings,
        catalog=catalog,
        experiments=experiments,
        store=store,
        # Only a shared store can serve several workers, so only then do other processes write this log.
        event_log=EventLog(settings.log_dir, max_bytes=settings.log_max_bytes, backup_count=settings.log_backup_count,
                           shared_between_processes=store.shared_between_processes),
    )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["botify"] = service
    _register_routes(app, service)
    return app


def _parse_user(text: str) -> int:
    if not USER_ID_PATTERN.fullmatch(text) or int(text) > MAX_USER_ID:
        raise BadRequest(f"user must be an integer in 0..{MAX_USER_ID}, got {text[:40]!r}")
    return int(text)


def _parse_body(catalog_size: int) -> tuple[int, float]:
    """The (track, time) a /next or /last body reports; strict so nothing odd reaches the log."""
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError:
        raise BadRequest("body must be a JSON object like {\"track\": 1, \"time\": 0.5}") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object like {\"track\": 1, \"time\": 0.5}")
    if "track" not in body or "time" not in body:
        raise BadRequest("body needs both `track` and `time`")
    track, listen_time = body["track"], body["time"]
    if type(track) is not int or not 0 <= track < catalog_size:
        raise BadRequest(f"track must be an integer id in 0..{catalog_size - 1}")
    if type(listen_time) not in (int, float) or not (0.0 <= listen_time <= 1.0):  # NaN fails the comparison
        raise BadRequest("time must be a number in [0, 1]")
    return track, float(listen_time)


def _register_routes(app: Flask, service: Service) -> None:
    catalog = service.catalog
    catalog_size = len(catalog)
    experiments = service.experiments
    serving = experiments[0]
    seed = service.config.seed
    store = service.store
    event_log = service.event_log

    def arms_of(user: int) -> dict[str, str]:
        return {experiment.name: experiment.arm_names[experiment.arm_index(user)] for experiment in experiments}

    @app.get("/")
    def alive():
        return json_response({"status": "alive", "message": f"botify serving {catalog_size} tracks"})

    @app.get("/experiments")
    def list_experiments():
        return json_response(
            {"experiments": [experiment.describe(experiment is serving) for experiment in experiments]}
        )

    @app.get("/track/<track_id>")
    def track(track_id: str):
        if not track_id.isascii() or not track_id.isdigit() or int(track_id) >= catalog_size:
            return json_response({"error": f"no track {track_id[:40]!r} in the catalog"}, 404)
        return json_response(catalog.rows[int(track_id)])

    def log_event(message: str, user: int, track_id: int, listen_time: float, started: float, recommendation):
        """One spec-3 log line; latency covers the handler body up to here, as the course measured it."""
        event_log.write(
            {
                "message": message,
                "timestamp": time.time_ns() // 1_000_000,
                "user": user,
                "track": track_id,
                "time": listen_time,
                "latency": time.perf_counter() - started,
                "recommendation": recommendation,
                "experiments": arms_of(user),
            }
        )

    @app.post("/next/<user_id>")
    def next_track(user_id: str):
        started = time.perf_counter()
        user = _parse_user(user_id)
        last_track, listen_time = _parse_body(catalog_size)
        request_number = store.next_request_number(user)
        draw = mmh3.hash128(f"{seed}:{user}:{request_number}:{last_track}:{listen_time!r}", signed=False)
        recommendation = serving.recommenders[serving.arm_index(user)].recommend(user, last_track, draw)
        log_event("next", user, last_track, listen_time, started, recommendation)
        return json_response({"user": user, "track": recommendation})

    @app.post("/last/<user_id>")
    def last_track(user_id: str):
        started = time.perf_counter()
        user = _parse_user(user_id)
        track_id, listen_time = _parse_body(catalog_size)
        log_event("last", user, track_id, listen_time, started, None)
        return json_response({"user": user})

    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest):
        return json_response({"error": str(error)}, 400)

    @app.errorhandler(redis.exceptions.RedisError)
    def store_unavailable(error: redis.exceptions.RedisError):
        """The shared counter store is down: the request is refused (and not logged) rather than served unseeded."""
        return json_response({"error": f"request store unavailable: {error}"}, 503)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        """Unknown routes, wrong methods, oversized bodies: the HTTP status, with a JSON error like the rest."""
        response = json_response({"error": error.description or error.name}, error.code or 500)
        allowed = getattr(error, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response
