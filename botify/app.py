"""The Flask application: a thin HTTP layer over `botify.service.Service`.

    GET  /                 {"status": "alive", "message": ...}
    GET  /track/<id>       the track's catalog row; 404 for anything that is not a catalog id (of any length)
    GET  /experiments      the experiments, their arms and which one serves /next (data paths relative to the config)
    POST /next/<user>      body {"track": int, "time": number in [0, 1]} -> {"user": user, "track": recommended id}
    POST /last/<user>      body {"track": int, "time": number in [0, 1]} -> {"user": user}

Each accepted /next or /last writes one log line (see botify.service). Under `clock: simulated` both need the
event's simulated time in the `X-Botify-Time` header (integer ms since epoch); the wall clock ignores the header.
Malformed input of any size or content gets a JSON 4xx and is not logged; a store or log that cannot take the event
gets a JSON 503 and is not logged either. A custom recommender that fails gets a JSON 500 naming the arm, the class
and the error (the event goes to the log folder's failed.json, see botify.service).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .service import MAX_USER_ID, BadRequest, RecommenderFailed, Service, ServiceUnavailable

MAX_BODY_BYTES = 4096
TIME_HEADER = "X-Botify-Time"
USER_ID_PATTERN = re.compile(r"[0-9]{1,10}")
JSON_TYPE = "application/json"
BODY_SHAPE = 'body must be a JSON object like {"track": 1, "time": 0.5}'
RETRY_AFTER = ("Retry-After", "1")  # on a 503: the store or the log may take the event a second later


def json_response(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype=JSON_TYPE)


def create_app(config: dict | str | Path, *, reset_counters: bool = False) -> Flask:
    """Build the service from a config dict or YAML path; the app's `botify` extension is the Service.

    The Service holds its log folder's lock until `app.extensions["botify"].close()`.
    """
    return app_for(Service.open(config, reset_counters=reset_counters))


def app_for(service: Service) -> Flask:
    """The Flask app serving an open Service."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # No routing redirects (an HTML 308 for "//" or a missing trailing slash): every answer is JSON.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.extensions["botify"] = service
    _register_routes(app, service)
    return app


def parse_user(text: str) -> int:
    if not USER_ID_PATTERN.fullmatch(text) or int(text) > MAX_USER_ID:
        raise BadRequest(f"user must be an integer in 0..{MAX_USER_ID}, got {text[:40]!r}")
    return int(text)


def parse_simulated_time(text: str | None) -> int | str | None:
    """The X-Botify-Time header as an int when it is one (the Service says what is wrong with anything else)."""
    if text is None:
        return None
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 16 else text


def parse_body(data: bytes) -> tuple[object, object]:
    """The (track, time) a /next or /last body holds, unchecked: the Service checks their types and ranges."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadRequest(BODY_SHAPE) from None
    if not isinstance(body, dict):
        raise BadRequest(BODY_SHAPE)
    if "track" not in body or "time" not in body:
        raise BadRequest("body needs both `track` and `time`")
    return body["track"], body["time"]


def internal_error_message(error: Exception) -> str:
    return f"internal error: {type(error).__name__}"


def _register_routes(app: Flask, service: Service) -> None:
    @app.get("/")
    def alive():
        return json_response(service.alive())

    @app.get("/experiments")
    def list_experiments():
        return json_response(service.describe_experiments())

    @app.get("/track/<track_id>")
    def track(track_id: str):
        row = service.track_row(track_id)
        if row is None:
            return json_response({"error": f"no track {track_id[:40]!r} in the catalog"}, 404)
        return json_response(row)

    @app.post("/next/<user_id>")
    def next_track(user_id: str):
        started = time.perf_counter()
        user = parse_user(user_id)
        last_track, listen_time = parse_body(request.get_data(cache=False))
        timestamp = parse_simulated_time(request.headers.get(TIME_HEADER))
        recommendation = service.next_track(user, last_track, listen_time, started=started, timestamp=timestamp)
        return json_response({"user": user, "track": recommendation})

    @app.post("/last/<user_id>")
    def last_track(user_id: str):
        started = time.perf_counter()
        user = parse_user(user_id)
        track_id, listen_time = parse_body(request.get_data(cache=False))
        service.last_track(
            user,
            track_id,
            listen_time,
            started=started,
            timestamp=parse_simulated_time(request.headers.get(TIME_HEADER)),
        )
        return json_response({"user": user})

    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest):
        return json_response({"error": str(error)}, 400)

    @app.errorhandler(ServiceUnavailable)
    def unavailable(error: ServiceUnavailable):
        """The counter store or the log cannot take the event: refused (and not logged) rather than served."""
        response = json_response({"error": str(error)}, 503)
        response.headers[RETRY_AFTER[0]] = RETRY_AFTER[1]
        return response

    @app.errorhandler(RecommenderFailed)
    def recommender_failed(error: RecommenderFailed):
        return json_response({"error": str(error)}, 500)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        """Unknown routes, wrong methods, oversized bodies: the HTTP status, with a JSON error like the rest."""
        response = json_response({"error": error.description or error.name}, error.code or 500)
        allowed = getattr(error, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        """A fault of the service itself: 500 with a JSON error (the tests keep this from ever happening)."""
        app.logger.exception("unexpected error")
        return json_response({"error": internal_error_message(error)}, 500)
