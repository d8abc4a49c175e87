"""Serving the app with production WSGI servers: waitress for one worker, gunicorn gthread workers for several."""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from flask import Flask

from . import create_app

WAITRESS_THREADS = 4
GUNICORN_THREADS = 4


class ServeError(RuntimeError):
    """A service that cannot start as asked (for example several workers without a shared store)."""


def startup_line(app: Flask, url: str, workers: int) -> str:
    service = app.extensions["botify"]
    experiments = "; ".join(
        f"{experiment.name}({', '.join(f'{arm.name}={arm.recommender}' for arm in experiment.config.arms)})"
        for experiment in service.experiments
    )
    return (
        f"botify: {len(service.catalog)} tracks, experiments {experiments}, store {service.config.store}, "
        f"log {service.config.log_dir}, {workers} worker(s), serving at {url}"
    )


def serve(config_path: str | Path, *, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> None:
    """Build the app once, start counting requests afresh, serve until SIGTERM/SIGINT, then close the log."""
    if workers < 1:
        raise ServeError("--workers must be at least 1")
    app = create_app(config_path)
    service = app.extensions["botify"]
    if workers > 1 and not service.store.shared_between_processes:
        raise ServeError(
            "several workers need a shared store: set `store: redis://127.0.0.1:6379/0` in the config "
            "(with the in-memory store each worker would count requests on its own, breaking determinism)"
        )
    service.store.reset()
    try:
        if workers == 1:
            _serve_waitress(app, host, port)
        else:
            _serve_gunicorn(app, host, port, workers)
    finally:
        service.close()


def _raise_system_exit(signum, frame):
    raise SystemExit(0)


def _serve_waitress(app: Flask, host: str, port: int) -> None:
    from waitress import create_server

    # Under bursts waitress warns "Task queue depth is N" per request; that is load, not a fault.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = create_server(app, host=host, port=port, threads=WAITRESS_THREADS, max_request_body_size=1 << 20)
    # waitress.run() treats SystemExit as a stop: it finishes the requests in flight, then returns.
    signal.signal(signal.SIGTERM, _raise_system_exit)
    signal.signal(signal.SIGINT, _raise_system_exit)
    print(startup_line(app, f"http://{host}:{server.effective_port}", 1), flush=True)
    server.run()
    server.close()


def _serve_gunicorn(app: Flask, host: str, port: int, workers: int) -> None:
    from gunicorn.app.base import BaseApplication

    def when_ready(arbiter) -> None:
        bound_port = arbiter.LISTENERS[0].sock.getsockname()[1]
        print(startup_line(app, f"http://{host}:{bound_port}", workers), flush=True)

    def worker_exit(arbiter, worker) -> None:
        app.extensions["botify"].close()

    class GunicornService(BaseApplication):
        def load_config(self):
            for key, value in {
                "bind": f"{host}:{port}",
                "workers": workers,
                "worker_class": "gthread",
                "threads": GUNICORN_THREADS,
                "preload_app": True,
                "graceful_timeout": 10,
                "keepalive": 75,
                "accesslog": None,
                "loglevel": "warning",
                "when_ready": when_ready,
                "worker_exit": worker_exit,
            }.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    GunicornService().run()


def main_serve(args) -> int:
    try:
        serve(args.config, host=args.host, port=args.port, workers=args.workers)
    except ServeError as error:
        print(f"botify: {error}", file=sys.stderr)
        return 2
    return 0
