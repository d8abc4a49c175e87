"""Serving the app with granian (a Rust HTTP server) in one or several worker processes.

granian's WSGI interface hands a request to a Python thread before its body has arrived and reads the body in
that thread, with no timeout: one client that stops mid-body holds the thread for good (granian issue #728,
"wontfix"). So the app is served over granian's native async interface (RSGI) instead: the event loop awaits
the whole body (bounded by the app's MAX_CONTENT_LENGTH), then runs the Flask app on it in one go. A stalled
client then costs one idle connection, not the worker. Measured on 2 cores, one worker, 16 kept-alive
connections: ~5,600-6,300 req/s this way; granian's WSGI threads did ~3,800 (2-4 threads, fighting over the
GIL) or ~7,000 (1 thread, which one stalled client stops); waitress did ~2,100.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import signal
import sys
from pathlib import Path

from flask import Flask
from granian.constants import HTTPModes, Interfaces, Loops
from granian.log import LogLevels
from granian.rsgi import ProtocolClosed
from granian.server import MPServer

from . import create_app


WORKER_STOP_SECONDS = 3


class FlaskOverRSGI:
    """Run a Flask (WSGI) app as a granian RSGI app: buffer the request body, then call the app synchronously."""

    def __init__(self, app: Flask):
        self.app = app
        self.max_body_bytes = app.config["MAX_CONTENT_LENGTH"]

    async def __rsgi__(self, scope, protocol) -> None:
        headers = scope.headers
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            # Refused by the app from the declared length alone (413), so the body is never read.
            body, content_length = b"", declared
        else:
            try:
                # Without chunking hyper delivers exactly the declared length (checked above), or nothing.
                body = await (self._read_chunked_body(protocol) if "transfer-encoding" in headers else protocol())
            except ProtocolClosed:
                return  # the client left before its body arrived: nothing to answer, nothing to log
            content_length = str(len(body))
        status_line, response_headers, payload = self._call_app(self._environ(scope, body, content_length))
        protocol.response_bytes(int(status_line[:3]), response_headers, payload)

    async def _read_chunked_body(self, protocol) -> bytes:
        """The body, or its first max+1 bytes: enough for the app to answer 413 without buffering the rest."""
        received = bytearray()
        async for chunk in protocol:
            received += chunk
            if len(received) > self.max_body_bytes:
                break
        return bytes(received)

    @staticmethod
    def _environ(scope, body: bytes, content_length: str) -> dict:
        """The WSGI environ of a buffered request: de-chunked, so the app always knows (and checks) its length."""
        server_host, _, server_port = scope.server.rpartition(":")
        environ = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            # granian has already percent-decoded the path as UTF-8; WSGI wants those bytes read as latin-1.
            "PATH_INFO": scope.path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": server_host,
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": scope.client.rpartition(":")[0],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": content_length,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in scope.headers.items():
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name not in ("content-length", "transfer-encoding"):  # the body is buffered and de-chunked
                key = "HTTP_" + name.upper().replace("-", "_")
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _call_app(self, environ: dict) -> tuple[str, list, bytes]:
        started: list = []

        def start_response(status: str, headers: list, exc_info=None) -> None:
            started[:] = [status, headers]

        chunks = self.app(environ, start_response)
        try:
            payload = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return started[0], started[1], payload


def _default_stop_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
    """Build the app once, start counting requests afresh, fork the workers, serve until SIGTERM/SIGINT.

    The main process binds the port and supervises; each forked worker serves the already-built app (its event
    log reopens its files after the fork). On SIGTERM/SIGINT the workers finish the requests in flight and exit;
    every log line is a single write, so none is partial.
    """
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
    # Workers inherit the built app by fork (the default on Linux before Python 3.14; the loader below hands over
    # an object in memory, which a spawned process could not receive).
    multiprocessing.set_start_method("fork", force=True)
    # A fork inherits granian's main-process handlers, which only flag the (child's copy of the) supervisor: a
    # SIGTERM that reached a worker before it installed its own handlers was lost and its stop hung. Until then
    # a worker has served nothing, so the default action (exit) loses nothing.
    os.register_at_fork(after_in_child=_default_stop_signals)
    server = MPServer(
        "botify",  # a label only: the workers serve `app`, handed over by the loader below
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        http=HTTPModes.http1,
        websockets=False,
        log_level=LogLevels.warning,
        loop=Loops.asyncio,  # uvloop measured ~8% more req/s; not worth another dependency at these figures
        # A worker finishes its requests in flight within milliseconds of SIGTERM; one that has not stopped after
        # this many seconds missed the signal (it can arrive while the worker is still starting) and is killed,
        # which loses nothing: each log line is a single write.
        workers_kill_timeout=WORKER_STOP_SECONDS,
    )

    @server.on_startup
    def announce() -> None:
        # The listener is bound before the startup hooks run; its spec then holds the port the kernel picked.
        bound_port = server._ssp.__getstate__()[1]
        print(startup_line(app, f"http://{host}:{bound_port}", workers), flush=True)

    try:
        server.serve(target_loader=lambda _label: FlaskOverRSGI(app))
    finally:
        service.close()


def main_serve(args) -> int:
    try:
        serve(args.config, host=args.host, port=args.port, workers=args.workers)
    except ServeError as error:
        print(f"botify: {error}", file=sys.stderr)
        return 2
    return 0
